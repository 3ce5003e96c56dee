//! The one error type of this crate: what went wrong, where (template, line, column), and
//! what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while adding, loading or rendering templates.
///
/// `template` names where the problem is: `acknowledgement/email/de` (a text body added
/// through the API), `acknowledgement/email/de (subject)`, `… (html)`, `partial greeting/de`,
/// or, for a set loaded from a directory, the file (`acknowledgement.email.de.hbs`). Lines and
/// columns are 1-based; columns count characters, not bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A template or partial does not parse.
    #[error("{template}: line {line}, column {column}: {message}")]
    Syntax {
        /// Where: template, part or file.
        template: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A template calls a helper that is neither built in nor a registered script helper:
    /// `{{foo bar}}`, `{{#foo}}` or `(foo)`. (A bare `{{foo}}` is a variable and renders empty
    /// when missing.)
    #[error(
        "{template}: line {line}, column {column}: unknown helper `{helper}`; use a built-in helper \
         or register a script helper of that name before adding the template"
    )]
    UnknownHelper {
        /// Where: template, part or file.
        template: String,
        /// 1-based line of the helper's name.
        line: usize,
        /// 1-based column of the helper's name.
        column: usize,
        /// The name that is not a helper.
        helper: String,
    },
    /// A template uses something this crate refuses: a decorator other than `inline`, a partial
    /// whose name is computed at render time, a malformed partial name.
    #[error("{template}: line {line}, column {column}: {message}")]
    Unsupported {
        /// Where: template, part or file.
        template: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is refused and what to write instead.
        message: String,
    },
    /// A template includes a partial that exists neither in its language nor in the set's
    /// default language.
    #[error(
        "{template}: line {line}, column {column}: partial `{partial}` exists neither in `{language}` \
         nor in the default language; add partials/{partial}.{language}.hbs"
    )]
    UnknownPartial {
        /// Where: template, part or file.
        template: String,
        /// 1-based line of the include.
        line: usize,
        /// 1-based column of the include.
        column: usize,
        /// The partial's name as written (`greeting`).
        partial: String,
        /// The language it was looked up in.
        language: String,
    },
    /// Partials, or a template's inline partials, would include each other without end.
    #[error(
        "{template}: line {line}, column {column}: partials would include each other in a cycle ({cycle}); \
         remove one of the includes"
    )]
    PartialCycle {
        /// The template, part or file with the include that closes the cycle.
        template: String,
        /// 1-based line of that include.
        line: usize,
        /// 1-based column of that include.
        column: usize,
        /// The cycle, e.g. `greeting/de → signature/de → greeting/de` or `inline a → inline a`.
        cycle: String,
    },
    /// A script helper does not compile.
    #[error("script helper `{helper}`: line {line}, column {column}: {message}; fix the script")]
    ScriptSyntax {
        /// The helper's name.
        helper: String,
        /// 1-based line in the script.
        line: usize,
        /// 1-based column in the script.
        column: usize,
        /// What Rhai reported.
        message: String,
    },
    /// A script helper failed while rendering: it raised an error or hit one of its limits
    /// (operations, call depth, string, array or map size).
    #[error(
        "{template}: {}script helper `{helper}` failed: {message}; fix the script or call it with smaller input",
        at(*.line, *.column)
    )]
    ScriptFailed {
        /// The template, part or file being rendered (a partial if the call was in one).
        template: String,
        /// 1-based line of the tag that called the helper, if known.
        line: Option<usize>,
        /// 1-based column of that tag, if known.
        column: Option<usize>,
        /// The helper's name (`a or b` when one tag calls several script helpers).
        helper: String,
        /// What Rhai reported, e.g. `too many operations (line 1, position 9)`.
        message: String,
    },
    /// Rendering failed: a helper got a value it cannot use, a partial was removed, ….
    #[error("{template}: {}{message}", at(*.line, *.column))]
    Render {
        /// The template, part or file being rendered (a partial if the failure was in one).
        template: String,
        /// 1-based line of the tag that failed, if known.
        line: Option<usize>,
        /// 1-based column of that tag, if known.
        column: Option<usize>,
        /// What went wrong and what to do.
        message: String,
    },
    /// Rendering entered more blocks than [`crate::Limits::max_steps`]: every loop iteration,
    /// block and partial is a step. Rendering stopped there.
    #[error(
        "{template}: {}rendering takes more than {limit} steps (each loop iteration, block and partial is one); \
         loop over shorter lists or nest fewer loops",
        at(*.line, *.column)
    )]
    TooManySteps {
        /// The template part or partial being rendered.
        template: String,
        /// 1-based line of the block being entered, if known.
        line: Option<usize>,
        /// 1-based column of that block, if known.
        column: Option<usize>,
        /// The limit.
        limit: u64,
    },
    /// Blocks and partials nested deeper than [`crate::Limits::max_depth`] while rendering;
    /// rendering stopped there instead of overflowing the stack.
    #[error(
        "{template}: {}blocks and partials nest deeper than {limit} levels while rendering; does a partial \
         include itself? flatten the template",
        at(*.line, *.column)
    )]
    TooDeep {
        /// The template part or partial being rendered.
        template: String,
        /// 1-based line of the block or partial being entered, if known.
        line: Option<usize>,
        /// 1-based column of it, if known.
        column: Option<usize>,
        /// The limit.
        limit: usize,
    },
    /// Rendering took longer than [`crate::Limits::max_render_ms`]; it stopped there.
    #[error(
        "{template}: {}rendering takes longer than {limit_ms} ms; loop over shorter lists or make the script \
         helpers cheaper",
        at(*.line, *.column)
    )]
    TooSlow {
        /// The template part or partial being rendered.
        template: String,
        /// 1-based line of the tag being rendered when time ran out, if known.
        line: Option<usize>,
        /// 1-based column of that tag, if known.
        column: Option<usize>,
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// A template, partial or script is larger than the set's limit.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes; shorten it")]
    SourceTooLarge {
        /// What was too large.
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A template has so many tags for its size that compiling it would take too long.
    #[error(
        "{template}: {tags} tags are too many for {size} bytes (at most {limit} at this size); \
         move parts into partials, each is compiled on its own"
    )]
    TooManyTags {
        /// Where: template, part or file.
        template: String,
        /// The number of `{{` in it.
        tags: usize,
        /// Its size in bytes.
        size: usize,
        /// The most tags a template of this size may have.
        limit: usize,
    },
    /// Rendering produced more text than the set's limit; rendering stopped there.
    #[error("{template}: the output would exceed {limit} bytes; shorten the template or the lists it loops over")]
    OutputTooLarge {
        /// The template part being rendered.
        template: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The set already holds as many templates and partials as its limit allows.
    #[error("the set already holds {limit} templates and partials; remove one before adding another")]
    TooManyTemplates {
        /// The limit.
        limit: usize,
    },
    /// The set already holds as many script helpers as its limit allows.
    #[error("the set already holds {limit} script helpers; remove one before adding another")]
    TooManyScriptHelpers {
        /// The limit.
        limit: usize,
    },
    /// A script helper would shadow a built-in helper.
    #[error("`{helper}` is a built-in helper; give the script helper another name")]
    ReservedHelper {
        /// The name asked for.
        helper: String,
    },
    /// No variant of the purpose exists for the channel and language, nor any fallback.
    #[error(
        "no template `{purpose}` for channel `{channel}` in `{language}` nor a fallback; \
         add {purpose}.default.{default_language}.hbs"
    )]
    NotFound {
        /// The purpose asked for.
        purpose: String,
        /// The channel asked for.
        channel: String,
        /// The language asked for (normalised to its primary tag).
        language: String,
        /// The set's default language.
        default_language: String,
    },
    /// A purpose, channel, language, partial or helper name is malformed.
    #[error("invalid {what} `{value}`: {rule}")]
    InvalidName {
        /// What kind of name (`purpose`, `channel`, `language`, `partial`, `helper`).
        what: &'static str,
        /// The value given.
        value: String,
        /// What a valid name looks like.
        rule: &'static str,
    },
    /// A template has parts its channel cannot carry, e.g. an SMS with a subject.
    #[error("{template}: {message}")]
    Invalid {
        /// Where: template or file.
        template: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A previewed SMS is longer than one message; [`crate::TemplateSet::render`] would have
    /// cut it.
    #[error(
        "{template}: the SMS is {length} {encoding} characters, more than the {limit} one message holds; \
         shorten the template"
    )]
    SmsTooLong {
        /// The template part.
        template: String,
        /// Its length in the encoding's units (GSM 03.38 septets or UCS-2 code units).
        length: usize,
        /// The limit for that encoding (160 or 70).
        limit: usize,
        /// `GSM` or `UCS-2`.
        encoding: &'static str,
    },
    /// A file in a template directory is misnamed or misplaced.
    #[error("{}: {message}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and how the file should be named.
        message: String,
    },
    /// A template directory or file could not be read.
    #[error("{}: {source}; check that it exists and is readable", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `line 3, column 7: ` when the position is known, nothing otherwise.
fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: "),
        (Some(line), None) => format!("line {line}: "),
        _ => String::new(),
    }
}

/// `message` with a lowercase first letter, as our messages are; other crates capitalise.
pub(crate) fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Error {
    /// The 1-based line and column the error points at, when it points at one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Error::Syntax { line, column, .. }
            | Error::UnknownHelper { line, column, .. }
            | Error::Unsupported { line, column, .. }
            | Error::UnknownPartial { line, column, .. }
            | Error::PartialCycle { line, column, .. }
            | Error::ScriptSyntax { line, column, .. } => Some((*line, *column)),
            Error::ScriptFailed { line: Some(line), column: Some(column), .. }
            | Error::TooManySteps { line: Some(line), column: Some(column), .. }
            | Error::TooDeep { line: Some(line), column: Some(column), .. }
            | Error::TooSlow { line: Some(line), column: Some(column), .. }
            | Error::Render { line: Some(line), column: Some(column), .. } => Some((*line, *column)),
            _ => None,
        }
    }
}
