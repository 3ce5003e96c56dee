//! Compiling one template source: parse it, check every helper it calls, and give each
//! partial it includes the template's language.
//!
//! Handlebars finds out that a helper is missing only when the tag is rendered, and maybe not
//! then (an `{{#if}}` branch not taken). We walk the parsed template instead, so an unknown
//! helper is refused when the template is saved, with its line and column.
//!
//! Partials exist per language, but Handlebars knows partials by name only. So
//! `{{> greeting}}` in a German template is rewritten to include `greeting@de`, a name the set
//! registers for every language, pointing at the German partial or, if there is none, at the
//! default language's.

use std::collections::{BTreeMap, HashSet};

use handlebars::template::{DecoratorTemplate, HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{TemplateError, TemplateErrorReason};

use crate::{Error, budget};

/// The partial that stands for the block a partial was called with.
const PARTIAL_BLOCK: &str = "@partial-block";

/// Most `tags × bytes` a source may have. Handlebars' parser (pest) finds the line and column
/// of every token by counting from the start of the source, so compiling costs about tags ×
/// bytes: 250 tags after 64 KiB of text took ~50 ms on our 2-core machine, 10,000 tags a
/// second. This keeps every compile near 50 ms at worst: 256 tags in 64 KiB, 4,096 in 4 KiB
/// (the default templates have under 30 in 2–3 KiB).
const TAG_BUDGET: usize = 16 * 1024 * 1024;

/// Deepest nesting of blocks (`{{#…}}`) and of subexpressions (`(…)` in one tag). Handlebars'
/// parser descends once per level on the thread's stack, so ten thousand `(upper (upper …`
/// in one 64 KiB tag would overflow it and abort the process; real templates nest four or
/// five levels.
const MAX_NESTING: usize = 32;

/// A compiled template and the partials it includes.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    /// The template, every body wrapped in [`budget::STEP`] (see [`wrap`]).
    pub(crate) template: Template,
    /// The file partials it includes, also from inside its inline partials.
    pub(crate) includes: Vec<Include>,
}

/// A `{{> name}}` of an inline partial (`{{#*inline "name"}}`) of the same source, from
/// inside the inline partial `from` (`None`: from the template's own body).
#[derive(Debug, Clone)]
struct InlineCall {
    from: Option<String>,
    to: String,
    line: usize,
    column: usize,
}

/// A `{{> name}}` in a template, where it is written.
#[derive(Debug, Clone)]
pub(crate) struct Include {
    pub(crate) partial: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// The name under which the partial `name` in `language` is registered.
pub(crate) fn partial_alias(name: &str, language: &str) -> String {
    format!("{name}@{language}")
}

/// The partial and language of an alias made by [`partial_alias`].
pub(crate) fn split_alias(alias: &str) -> (&str, &str) {
    alias.rsplit_once('@').unwrap_or((alias, ""))
}

/// Parses `source`, naming it `label` in errors and at render time, and checks it.
/// `is_helper` says which names are helpers (built in or scripts).
pub(crate) fn compile(
    label: &str,
    source: &str,
    language: &str,
    is_helper: &dyn Fn(&str) -> bool,
) -> Result<Compiled, Error> {
    let tags = source.matches("{{").count();
    if tags.saturating_mul(source.len()) > TAG_BUDGET {
        return Err(Error::TooManyTags {
            template: label.to_owned(),
            tags,
            size: source.len(),
            limit: TAG_BUDGET / source.len(),
        });
    }
    if let Some((at, what)) = too_deep(source) {
        let (line, column) = position(source, at);
        return Err(Error::Unsupported {
            template: label.to_owned(),
            line,
            column,
            message: format!(
                "{what} nest deeper than {MAX_NESTING} levels here; move the inner part into a partial or a variable"
            ),
        });
    }
    let mut template = Template::compile_with_name(source, label.to_owned()).map_err(|e| syntax(label, source, &e))?;
    let mut inline = HashSet::new();
    inline_partials(&template, &mut inline);
    let mut walker = Walker {
        label,
        source,
        language,
        is_helper,
        inline,
        scope: None,
        includes: Vec::new(),
        inline_calls: Vec::new(),
    };
    walker.template(&mut template, (1, 1))?;
    if let Some(e) = inline_cycle(label, &walker.inline_calls) {
        return Err(e);
    }
    let step = step_helper(label)?;
    wrap_bodies(&mut template, &step);
    let template = wrap(template, &step, None);
    Ok(Compiled { template, includes: walker.includes })
}

/// Where blocks or subexpressions first nest deeper than [`MAX_NESTING`], and which. A guide
/// that knows tags, comments, escapes and quoted strings, which is all nesting depends on.
fn too_deep(source: &str) -> Option<(usize, &'static str)> {
    let mut blocks = 0usize;
    let mut cursor = 0;
    while let Some(found) = source[cursor..].find("{{") {
        let start = cursor + found;
        if source[..start].ends_with('\\') {
            cursor = start + 2;
            continue;
        }
        let inner = start + source[start..].find(|c| c != '{').unwrap_or(source.len() - start);
        let rest = &source[inner..];
        if rest.starts_with('!') {
            let close = if rest.starts_with("!--") { "--}}" } else { "}}" };
            cursor = rest.find(close).map_or(source.len(), |end| inner + end + close.len());
            continue;
        }
        let body = rest.trim_start_matches(['~', ' ', '\n', '\r', '\t']);
        // `{{^}}` alone is an `{{else}}`; `{{^name}}` opens an inverse block.
        let inverse = body.strip_prefix('^').is_some_and(|b| !b.trim_start_matches(['~', ' ']).starts_with('}'));
        if body.starts_with('#') || inverse {
            blocks += 1;
            if blocks > MAX_NESTING {
                return Some((start, "blocks"));
            }
        } else if body.starts_with('/') {
            blocks = blocks.saturating_sub(1);
        }
        // Parentheses of this tag, outside quoted strings.
        let mut parens = 0usize;
        let mut quote = None;
        let mut end = source.len();
        for (i, c) in rest.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '(') => {
                    parens += 1;
                    if parens > MAX_NESTING {
                        return Some((inner + i, "subexpressions"));
                    }
                }
                (None, ')') => parens = parens.saturating_sub(1),
                (None, '}') if rest[i..].starts_with("}}") => {
                    end = inner + i + 2;
                    break;
                }
                _ => {}
            }
        }
        cursor = end;
    }
    None
}

/// The first cycle among the inline partials of one source (`a` includes `b` includes `a`):
/// Handlebars would recurse until the stack overflows. Points at the include that closes it.
fn inline_cycle(label: &str, calls: &[InlineCall]) -> Option<Error> {
    let mut edges: BTreeMap<&str, Vec<&InlineCall>> = BTreeMap::new();
    for call in calls {
        if let Some(from) = &call.from {
            edges.entry(from.as_str()).or_default().push(call);
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a InlineCall>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<(&'a InlineCall, String)> {
        marks.insert(node, Mark::Open);
        path.push(node);
        for call in edges.get(node).into_iter().flatten() {
            match marks.get(call.to.as_str()) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => {
                    let start = path.iter().position(|n| *n == call.to).unwrap_or(0);
                    let cycle: Vec<String> =
                        path[start..].iter().chain([&call.to.as_str()]).map(|n| format!("inline {n}")).collect();
                    return Some((call, cycle.join(" → ")));
                }
                None => {
                    if let Some(found) = visit(call.to.as_str(), edges, marks, path) {
                        return Some(found);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for &node in edges.keys() {
        if marks.contains_key(node) {
            continue;
        }
        if let Some((call, cycle)) = visit(node, &edges, &mut marks, &mut Vec::new()) {
            return Some(Error::PartialCycle {
                template: label.to_owned(),
                line: call.line,
                column: call.column,
                cycle,
            });
        }
    }
    None
}

/// The hidden block helper [`wrap`] puts around bodies, taken from a parsed template because
/// Handlebars' element types cannot be built outside its crate. The `~` makes it a tag that
/// never indents what it writes (Handlebars indents after standalone block tags only).
fn step_helper(label: &str) -> Result<HelperTemplate, Error> {
    let source = format!("{{{{~#{0}}}}}{{{{/{0}}}}}", budget::STEP);
    let parsed = Template::compile(&source).ok();
    match parsed.as_ref().and_then(|t| t.elements.first()) {
        Some(TemplateElement::HelperBlock(h)) => Ok((**h).clone()),
        _ => Err(Error::Render {
            template: label.to_owned(),
            line: None,
            column: None,
            message: "the render budget could not be set up; report this as a bug".to_owned(),
        }),
    }
}

/// Wraps every block body, `{{else}}` branch, inline partial and partial block of `template`
/// in the step helper, so each loop iteration and each entry into a partial is counted and
/// nested against the render's budget (see [`crate::budget`]).
fn wrap_bodies(template: &mut Template, step: &HelperTemplate) {
    let Template { elements, mapping, .. } = template;
    for (i, element) in elements.iter_mut().enumerate() {
        let at = mapping.get(i);
        let bodies: Vec<&mut Option<Template>> = match element {
            TemplateElement::HelperBlock(h) => {
                let h = &mut **h;
                vec![&mut h.template, &mut h.inverse]
            }
            TemplateElement::DecoratorBlock(d) | TemplateElement::PartialBlock(d) => vec![&mut d.template],
            _ => Vec::new(),
        };
        for body in bodies {
            if let Some(mut t) = body.take() {
                wrap_bodies(&mut t, step);
                *body = Some(wrap(t, step, at));
            }
        }
    }
}

/// `body` inside one step helper; the wrapper takes the body's name (errors and Handlebars'
/// own self-include check use it) and `at` as its position (else the body's first one).
fn wrap(body: Template, step: &HelperTemplate, at: Option<&handlebars::template::TemplateMapping>) -> Template {
    if body.elements.is_empty() {
        return body;
    }
    let mut outer = Template::new();
    outer.name = body.name.clone();
    if let Some(at) = at.or(body.mapping.first()) {
        outer.mapping.push(at.clone());
    }
    let mut h = step.clone();
    h.template = Some(body);
    outer.elements.push(TemplateElement::HelperBlock(Box::new(h)));
    outer
}

fn syntax(label: &str, source: &str, e: &TemplateError) -> Error {
    let (line, column) = e.pos().unwrap_or_else(|| match e.reason() {
        // Handlebars does not place this one; the parameter's text is where it is.
        TemplateErrorReason::InvalidParam(param) => {
            source.find(param.as_str()).map_or((1, 1), |at| position(source, at))
        }
        _ => (1, 1),
    });
    let at_end = offset(source, (line, column)).is_none_or(|at| source[at..].trim().is_empty());
    let (line, column, message) = match e.reason() {
        // The parser reads on to the end before it gives up on an unclosed tag or block, so
        // its position is useless then; point at what was left open instead.
        TemplateErrorReason::InvalidSyntax(_) if at_end => match unclosed(source) {
            Some((at, None)) => {
                let (line, column) = position(source, at);
                (line, column, "this `{{` is never closed; add `}}`".to_owned())
            }
            Some((at, Some(block))) => {
                let (line, column) = position(source, at);
                (line, column, format!("`{{{{#{block}}}}}` is never closed; add `{{{{/{block}}}}}`"))
            }
            None => (line, column, SYNTAX.to_owned()),
        },
        TemplateErrorReason::InvalidSyntax(_) => (line, column, SYNTAX.to_owned()),
        other => (line, column, other.to_string()),
    };
    Error::Syntax { template: label.to_owned(), line, column, message }
}

const SYNTAX: &str = "invalid Handlebars syntax; check the tag here: `{{name}}`, `{{helper value \"text\" key=value}}`, \
                      `{{#block}}…{{/block}}`, `{{> partial}}`";

/// The byte offset of the first `{{` that is never closed, or of the innermost `{{#block}}`
/// left open (with the block's name). Only a guide for error messages: it knows comments and
/// escapes, not every corner of the grammar.
fn unclosed(source: &str) -> Option<(usize, Option<String>)> {
    let mut open: Vec<(usize, String)> = Vec::new();
    let mut cursor = 0;
    while let Some(found) = source[cursor..].find("{{") {
        let start = cursor + found;
        if source[..start].ends_with('\\') {
            cursor = start + 2;
            continue;
        }
        let inner = start + source[start..].find(|c| c != '{').unwrap_or(source.len() - start);
        let (close, end) = if source[inner..].starts_with("!--") { ("--}}", 4) } else { ("}}", 2) };
        let Some(length) = source[inner..].find(close) else { return Some((start, None)) };
        let content = &source[inner..inner + length];
        if !source[inner..].starts_with('!') && content.contains("{{") {
            return Some((start, None));
        }
        let content = content.trim_start_matches(['~', ' ', '\n', '\r', '\t']);
        if let Some(block) = content.strip_prefix('#') {
            let name = block.trim_start_matches(['*', '>', ' ']).split([' ', '}', '~', '\n']).next().unwrap_or("");
            open.push((start, name.to_owned()));
        } else if content.starts_with('/') {
            open.pop();
        }
        cursor = inner + length + end;
    }
    open.pop().map(|(at, name)| (at, Some(name)))
}

/// Names defined with `{{#*inline "name"}}`: they are the template's own and keep their name.
fn inline_partials(template: &Template, names: &mut HashSet<String>) {
    for element in &template.elements {
        match element {
            TemplateElement::DecoratorBlock(d) => {
                if d.name.as_name() == Some("inline")
                    && let Some(Parameter::Literal(serde_json::Value::String(name))) = d.params.first()
                {
                    names.insert(name.clone());
                }
                if let Some(t) = &d.template {
                    inline_partials(t, names);
                }
            }
            TemplateElement::HelperBlock(h) => {
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    inline_partials(t, names);
                }
            }
            TemplateElement::PartialBlock(d) => {
                if let Some(t) = &d.template {
                    inline_partials(t, names);
                }
            }
            _ => {}
        }
    }
}

struct Walker<'a> {
    label: &'a str,
    source: &'a str,
    language: &'a str,
    is_helper: &'a dyn Fn(&str) -> bool,
    inline: HashSet<String>,
    /// The inline partial whose body is being walked (the innermost one).
    scope: Option<String>,
    includes: Vec<Include>,
    inline_calls: Vec<InlineCall>,
}

impl Walker<'_> {
    /// Walks a template's elements; `outer` is the position used where the template has none
    /// (Handlebars records none for `{{else if}}` branches).
    fn template(&mut self, template: &mut Template, outer: (usize, usize)) -> Result<(), Error> {
        let Template { elements, mapping, .. } = template;
        for (i, element) in elements.iter_mut().enumerate() {
            let at = mapping.get(i).map_or(outer, |m| (m.0, m.1));
            self.element(element, at)?;
        }
        Ok(())
    }

    fn element(&mut self, element: &mut TemplateElement, at: (usize, usize)) -> Result<(), Error> {
        match element {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                if h.params.is_empty() && h.hash.is_empty() {
                    // `{{name}}` is a helper if one exists, a variable otherwise.
                    self.parameter(&h.name, at)
                } else {
                    self.helper(h, at)
                }
            }
            TemplateElement::HelperBlock(h) => {
                self.helper(h, at)?;
                for t in [&mut h.template, &mut h.inverse].into_iter().flatten() {
                    self.template(t, at)?;
                }
                Ok(())
            }
            TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                if d.name.as_name() != Some("inline") {
                    let name = d.name.as_name().unwrap_or("?").to_owned();
                    return Err(self.unsupported(
                        at,
                        &name,
                        format!("decorator `{name}` is not available; only `{{{{#*inline \"name\"}}}}` is"),
                    ));
                }
                let name = self.inline_name(d, at)?;
                let outer = self.scope.replace(name);
                let result = self.decorator(d, at);
                self.scope = outer;
                result
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                self.partial(d, at)?;
                self.decorator(d, at)
            }
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            _ => Ok(()),
        }
    }

    /// A helper call: its name must be a helper, and so must every subexpression's.
    fn helper(&mut self, h: &HelperTemplate, at: (usize, usize)) -> Result<(), Error> {
        match &h.name {
            name @ (Parameter::Name(_) | Parameter::Path(_)) => self.helper_name(name.as_name().unwrap_or(""), at)?,
            other => self.parameter(other, at)?,
        }
        for p in h.params.iter().chain(h.hash.values()) {
            self.parameter(p, at)?;
        }
        Ok(())
    }

    fn helper_name(&self, name: &str, at: (usize, usize)) -> Result<(), Error> {
        if (self.is_helper)(name) {
            return Ok(());
        }
        let (line, column) = self.locate(at, name);
        Err(Error::UnknownHelper { template: self.label.to_owned(), line, column, helper: name.to_owned() })
    }

    /// A parameter: only subexpressions (`(helper …)`) need checking; each is a helper call.
    fn parameter(&mut self, p: &Parameter, at: (usize, usize)) -> Result<(), Error> {
        if let Parameter::Subexpression(s) = p
            && let TemplateElement::Expression(h) = s.as_element()
        {
            match &h.name {
                name @ (Parameter::Name(_) | Parameter::Path(_)) => {
                    self.helper_name(name.as_name().unwrap_or(""), at)?
                }
                other => self.parameter(other, at)?,
            }
            for p in h.params.iter().chain(h.hash.values()) {
                self.parameter(p, at)?;
            }
        }
        Ok(())
    }

    /// The parameters and the block of a decorator or partial.
    fn decorator(&mut self, d: &mut DecoratorTemplate, at: (usize, usize)) -> Result<(), Error> {
        for p in d.params.iter().chain(d.hash.values()) {
            self.parameter(p, at)?;
        }
        if let Some(t) = &mut d.template {
            self.template(t, at)?;
        }
        Ok(())
    }

    /// `{{> name}}`: gives the include the template's language and records it.
    fn partial(&mut self, d: &mut DecoratorTemplate, at: (usize, usize)) -> Result<(), Error> {
        let name = match &d.name {
            name @ (Parameter::Name(_) | Parameter::Path(_)) => name.as_name().unwrap_or("").to_owned(),
            _ => {
                return Err(self.unsupported(
                    at,
                    ">",
                    "partial names computed at render time are not supported; write the name: {{> greeting}}"
                        .to_owned(),
                ));
            }
        };
        if name == PARTIAL_BLOCK {
            return Ok(());
        }
        let (line, column) = self.locate(at, &name);
        if self.inline.contains(&name) {
            self.inline_calls.push(InlineCall { from: self.scope.clone(), to: name, line, column });
            return Ok(());
        }
        if crate::set::check_name(&name, "partial").is_err() {
            return Err(Error::Unsupported {
                template: self.label.to_owned(),
                line,
                column,
                message: format!("`{name}` is not a partial name; partial names use a-z, 0-9, `_` and `-`"),
            });
        }
        d.name = Parameter::Name(partial_alias(&name, self.language));
        self.includes.push(Include { partial: name, line, column });
        Ok(())
    }

    /// The name of `{{#*inline "name"}}`: written in quotes (a name computed at render time
    /// could be anything, the alias of another language's partial included) and a partial
    /// name, so it can never stand for a partial of the set.
    fn inline_name(&self, d: &DecoratorTemplate, at: (usize, usize)) -> Result<String, Error> {
        match d.params.first() {
            Some(Parameter::Literal(serde_json::Value::String(name)))
                if crate::set::check_name(name, "partial").is_ok() =>
            {
                Ok(name.clone())
            }
            Some(Parameter::Literal(serde_json::Value::String(name))) => Err(self.unsupported(
                at,
                "inline",
                format!(
                    "`{name}` is not an inline partial name; names use a-z, 0-9, `_` and `-`, starting with a letter"
                ),
            )),
            _ => Err(self.unsupported(
                at,
                "inline",
                "an inline partial needs its name in quotes: {{#*inline \"name\"}}".to_owned(),
            )),
        }
    }

    fn unsupported(&self, at: (usize, usize), near: &str, message: String) -> Error {
        let (line, column) = self.locate(at, near);
        Error::Unsupported { template: self.label.to_owned(), line, column, message }
    }

    /// Where `name` is written in the tag that starts at `at`; `at` itself if it is not found
    /// (a name in an `{{else if}}`, say).
    fn locate(&self, at: (usize, usize), name: &str) -> (usize, usize) {
        let Some(start) = offset(self.source, at) else { return at };
        let rest = &self.source[start..];
        let tag = &rest[..rest.find("}}").map_or(rest.len(), |end| end + 2)];
        let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '/' | '$' | ':');
        let mut from = 0;
        while let Some(found) = tag[from..].find(name) {
            let i = from + found;
            let before = tag[..i].chars().next_back();
            let after = tag[i + name.len()..].chars().next();
            if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
                return position(self.source, start + i);
            }
            from = i + name.len();
        }
        at
    }
}

/// The byte offset of a 1-based (line, column in characters).
fn offset(source: &str, (line, column): (usize, usize)) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += source[start..].find('\n')? + 1;
    }
    let in_line = source[start..].char_indices().nth(column.checked_sub(1)?).map(|(i, _)| i)?;
    Some(start + in_line)
}

/// The 1-based (line, column in characters) of a byte offset.
pub(crate) fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The names of the helpers called in the tag at `at` (the innermost one if tags are nested).
/// Used to name the script helper that failed, since Handlebars only reports the tag.
pub(crate) fn helpers_at(template: &Template, at: (usize, usize)) -> Vec<String> {
    let mut names = Vec::new();
    collect_at(template, at, None, &mut names);
    names
}

fn collect_at(template: &Template, at: (usize, usize), outer: Option<(usize, usize)>, names: &mut Vec<String>) {
    for (i, element) in template.elements.iter().enumerate() {
        let here = template.mapping.get(i).map(|m| (m.0, m.1)).or(outer);
        let hit = here == Some(at);
        match element {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) | TemplateElement::HelperBlock(h) => {
                if hit {
                    head_names(h, names);
                }
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    collect_at(t, at, here, names);
                }
            }
            TemplateElement::DecoratorExpression(d)
            | TemplateElement::DecoratorBlock(d)
            | TemplateElement::PartialExpression(d)
            | TemplateElement::PartialBlock(d) => {
                if hit {
                    for p in d.params.iter().chain(d.hash.values()) {
                        parameter_names(p, names);
                    }
                }
                if let Some(t) = &d.template {
                    collect_at(t, at, here, names);
                }
            }
            _ => {}
        }
    }
}

fn head_names(h: &HelperTemplate, names: &mut Vec<String>) {
    if let Some(name) = h.name.as_name() {
        names.push(name.to_owned());
    }
    parameter_names(&h.name, names);
    for p in h.params.iter().chain(h.hash.values()) {
        parameter_names(p, names);
    }
}

fn parameter_names(p: &Parameter, names: &mut Vec<String>) {
    if let Parameter::Subexpression(s) = p
        && let TemplateElement::Expression(h) = s.as_element()
    {
        head_names(h, names);
    }
}
