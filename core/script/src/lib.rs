//! The hardened Rhai engine every script of Plugdesk runs on: workflows and template helpers
//! build theirs here, so a limit or a closed door is set in one place.
//!
//! Rhai is unlimited by default; [`hardened`] starts from `Engine::new_raw()` (no packages, no
//! module resolver) and sets every limit of [`Limits`]. Callers add the packages, functions and
//! progress callback (a deadline) they need.
//!
//! There is no default: each caller states what its scripts may do.
//!
//! ```
//! use rhai::packages::{CorePackage, Package};
//!
//! let mut engine = plugdesk_script::hardened(&plugdesk_script::Limits {
//!     operations: 10_000,
//!     call_levels: 8,
//!     expr_depth: 16,
//!     function_expr_depth: 8,
//!     string_bytes: 1024,
//!     array_len: 64,
//!     map_len: 64,
//!     variables: 32,
//!     functions: 8,
//!     strict_variables: true,
//! });
//! engine.register_global_module(CorePackage::new().as_shared_module());
//! assert_eq!(engine.eval::<i64>("let x = 40; x + 2").ok(), Some(42));
//! assert!(engine.eval::<rhai::Dynamic>("loop {}").is_err());
//! ```

/// What one engine allows a script; every field is a Rhai limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations of one run (≈ statements and expressions evaluated).
    pub operations: u64,
    /// Deepest nesting of function calls: a recursive script stops here instead of
    /// overflowing the stack.
    pub call_levels: usize,
    /// Deepest nesting of expressions at compile time, at the top level.
    pub expr_depth: usize,
    /// The same inside functions.
    pub function_expr_depth: usize,
    /// Longest string a script may build, bytes.
    pub string_bytes: usize,
    /// Largest array.
    pub array_len: usize,
    /// Largest map.
    pub map_len: usize,
    /// Variables in scope at once.
    pub variables: usize,
    /// Functions a script may define.
    pub functions: usize,
    /// Names that are not declared are a compile error rather than a run-time one.
    pub strict_variables: bool,
}

/// A Rhai engine with no packages, no module resolver, no `eval`, `print` and `debug`
/// discarded, and every limit of `limits` set.
pub fn hardened(limits: &Limits) -> rhai::Engine {
    let mut engine = rhai::Engine::new_raw();
    engine
        .set_max_operations(limits.operations)
        .set_max_call_levels(limits.call_levels)
        .set_max_expr_depths(limits.expr_depth, limits.function_expr_depth)
        .set_max_string_size(limits.string_bytes)
        .set_max_array_size(limits.array_len)
        .set_max_map_size(limits.map_len)
        .set_max_variables(limits.variables)
        .set_max_functions(limits.functions)
        .set_strict_variables(limits.strict_variables);
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine
}

#[cfg(test)]
mod tests {
    use rhai::packages::{Package, StandardPackage};

    use super::*;

    #[test]
    fn every_limit_holds() {
        let mut engine = hardened(&Limits {
            operations: 50_000,
            call_levels: 16,
            expr_depth: 32,
            function_expr_depth: 16,
            string_bytes: 64 * 1024,
            array_len: 1024,
            map_len: 256,
            variables: 256,
            functions: 64,
            strict_variables: true,
        });
        engine.register_global_module(StandardPackage::new().as_shared_module());
        let cases = [
            ("loop {}", "Too many operations"),
            ("let s = \"x\"; loop { s += s; }", "Length of string"),
            ("let a = []; loop { a.push(1); }", "Size of array"),
            ("fn f(n) { f(n + 1) } f(0)", "Stack overflow"),
            ("eval(\"1\")", "eval"),
            ("nobody_declared_me", "Undefined variable"),
        ];
        for (script, expected) in cases {
            let e = match engine.eval::<rhai::Dynamic>(script) {
                Ok(v) => panic!("{script}: ran and returned {v}"),
                Err(e) => e,
            };
            assert!(format!("{e}").contains(expected), "{script}: {e}");
        }
        let nested = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert!(engine.compile(&nested).is_err(), "40 nested parentheses compiled");
        // Nothing reaches stdout, and a plain script still runs.
        assert_eq!(engine.eval::<i64>("print(\"x\"); debug(\"y\"); 1 + 1").ok(), Some(2));
    }
}
