//! The Rhai engine that runs workspace helpers written as scripts.
//!
//! Handlebars' `script_helper` evaluates scripts on the registry's engine, which is a plain
//! `Engine::new()` — no limits, `print` to stdout, a file module resolver — unless
//! `set_engine` replaces it. Every registry of this crate gets [`engine`] at construction,
//! before any script helper exists, so no script ever runs on the default one.
//!
//! A script sees `params` (array) and `hash` (map) and returns the value to render:
//! `params[0].to_upper() + "!"`.

use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
};

/// What a helper script may do. Deepest call nesting: a recursive script stops here instead of
/// overflowing the stack. Largest string: as large as a template may be. Largest array and
/// map: a helper formats one value, it does not need more.
const LIMITS: plugdesk_script::Limits = plugdesk_script::Limits {
    // Set per engine: see [`engine`].
    operations: 0,
    call_levels: 16,
    expr_depth: 32,
    function_expr_depth: 16,
    string_bytes: 64 * 1024,
    array_len: 1024,
    map_len: 256,
    variables: 256,
    functions: 64,
    strict_variables: false,
};

/// A Rhai engine with the language's own functions (strings, arrays, maps, maths, logic) and
/// nothing that reaches outside: no modules, no time, no `eval`, `print` and `debug` discarded.
///
/// `operations` bounds the work of one helper call (~50,000 is about a millisecond).
pub(crate) fn engine(operations: u64) -> rhai::Engine {
    let mut engine = plugdesk_script::hardened(&plugdesk_script::Limits { operations, ..LIMITS });
    engine.register_global_module(CorePackage::new().as_shared_module());
    engine.register_global_module(LogicPackage::new().as_shared_module());
    engine.register_global_module(BasicMathPackage::new().as_shared_module());
    engine.register_global_module(BasicArrayPackage::new().as_shared_module());
    engine.register_global_module(BasicMapPackage::new().as_shared_module());
    engine.register_global_module(MoreStringPackage::new().as_shared_module());
    // The render's deadline holds inside scripts too; a clock read every few thousand
    // operations costs nothing measurable.
    engine.on_progress(|operations| {
        (operations % 4096 == 0 && crate::budget::late()).then(|| rhai::Dynamic::from("the render ran out of time"))
    });
    engine
}

/// What a failed script reported, lowercased to fit into our messages.
pub(crate) fn describe(error: &rhai::EvalAltResult) -> String {
    crate::error::lowercase_first(&error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_limited() {
        let engine = engine(50_000);
        let cases = [
            ("loop {}", "Too many operations"),
            ("let s = \"x\"; loop { s += s; }", "Length of string"),
            ("let a = []; loop { a.push(1); }", "Size of array"),
            ("fn f(n) { f(n + 1) } f(0)", "Stack overflow"),
            ("eval(\"1\")", "eval"),
        ];
        for (script, expected) in cases {
            let e = engine.eval::<rhai::Dynamic>(script).expect_err(script);
            assert!(format!("{e}").contains(expected), "{script}: {e}");
        }
        assert_eq!(engine.eval::<String>("\"ab\".to_upper() + [1, 2].len()").ok().as_deref(), Some("AB2"));
    }
}
