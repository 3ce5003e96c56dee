//! A workspace's templates: variants per purpose, channel and language, the partials they
//! include, the script helpers they call; choosing a variant and rendering it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use handlebars::{Context, Handlebars, Output, RenderContext, RenderError, RenderErrorReason, Renderable};
use serde::{Deserialize, Serialize};

use crate::budget::{self, Budget, Exceeded};
use crate::compile::{self, Compiled};
use crate::locale::Locale;
use crate::{Error, helper, script, sms};

/// The default language of a set made by [`TemplateSet::load_dir`].
pub const DEFAULT_LANGUAGE: &str = "en";

/// The channel whose variants stand in for any channel without its own.
pub const DEFAULT_CHANNEL: &str = "default";

/// The channel whose text must fit into one SMS.
pub const SMS_CHANNEL: &str = "sms";

/// What a set accepts and produces at most. Every limit returns an [`Error`] when reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Bytes of one template part (subject, text, HTML), partial or script.
    pub max_source_bytes: usize,
    /// Bytes of one rendered part; rendering stops when it is reached.
    pub max_output_bytes: usize,
    /// Templates (each variant counts once, whatever its parts) plus partials in the set.
    pub max_templates: usize,
    /// Script helpers in the set.
    pub max_script_helpers: usize,
    /// Rhai operations one script helper call may take (50,000 is about a millisecond).
    pub script_operations: u64,
    /// Steps one render may take: every block entered, every loop iteration and every partial
    /// included is one. A reply that loops over a ticket's messages takes a few hundred.
    pub max_steps: u64,
    /// How deeply blocks and partials may nest while rendering. Sources nest blocks 32 deep
    /// at most; partials add to that. Each level costs a few KiB of stack (see the test
    /// `the_deepest_render_fits_a_small_stack`), so this stays far from the 2 MiB of a tokio
    /// blocking thread.
    pub max_depth: usize,
    /// Wall-clock milliseconds one render (all parts of a variant) may take, script helpers
    /// included.
    pub max_render_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_bytes: 64 * 1024,
            max_output_bytes: 256 * 1024,
            max_templates: 1000,
            max_script_helpers: 64,
            script_operations: 50_000,
            max_steps: 100_000,
            max_depth: 64,
            max_render_ms: 1000,
        }
    }
}

/// The sources of one template variant.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateSource<'a> {
    /// The subject line (email); newlines in the rendered subject become spaces.
    pub subject: Option<&'a str>,
    /// The plain-text body; nothing in it is HTML-escaped.
    pub text: &'a str,
    /// The HTML body (email); every `{{value}}` in it is HTML-escaped, `{{{value}}}` is not.
    pub html: Option<&'a str>,
}

impl<'a> TemplateSource<'a> {
    /// A variant with a text body only (chat, SMS, …).
    pub fn text(text: &'a str) -> Self {
        TemplateSource { subject: None, text, html: None }
    }
}

/// The sources of one partial. At least one of the two must be given.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartialSource<'a> {
    /// Used in text bodies and subjects, and in HTML bodies when there is no `html`.
    pub text: Option<&'a str>,
    /// Used in HTML bodies instead of `text`.
    pub html: Option<&'a str>,
}

impl<'a> PartialSource<'a> {
    /// A partial with one source for text and HTML.
    pub fn text(text: &'a str) -> Self {
        PartialSource { text: Some(text), html: None }
    }
}

/// One compiled part (subject, text or HTML) and its source.
#[derive(Debug, Clone)]
struct Part {
    /// The name in errors: `acknowledgement/email/de (html)` or the file name.
    label: String,
    source: String,
    compiled: Compiled,
}

/// One template: a purpose in a channel and a language, compiled.
#[derive(Debug, Clone)]
pub struct Variant {
    purpose: String,
    channel: String,
    language: String,
    subject: Option<Part>,
    text: Part,
    html: Option<Part>,
}

impl Variant {
    /// The purpose (`acknowledgement`, `lost_parcel`, …).
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The channel (`email`, `chat`, `sms`, `default`, …).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The primary language tag (`de`, `en`, …).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The subject's source, if the variant has one.
    pub fn subject_source(&self) -> Option<&str> {
        self.subject.as_ref().map(|p| p.source.as_str())
    }

    /// The text body's source.
    pub fn text_source(&self) -> &str {
        &self.text.source
    }

    /// The HTML body's source, if the variant has one.
    pub fn html_source(&self) -> Option<&str> {
        self.html.as_ref().map(|p| p.source.as_str())
    }

    fn parts(&self) -> impl Iterator<Item = (&Part, bool)> {
        let text = self.subject.iter().chain([&self.text]).map(|p| (p, false));
        text.chain(self.html.iter().map(|p| (p, true)))
    }
}

#[derive(Debug, Clone)]
struct Partial {
    text: Option<Part>,
    html: Option<Part>,
}

impl Partial {
    /// The part used in text (`html == false`) or HTML output.
    fn part(&self, html: bool) -> Option<&Part> {
        if html { self.html.as_ref().or(self.text.as_ref()) } else { self.text.as_ref() }
    }

    fn parts(&self) -> impl Iterator<Item = (&Part, bool)> {
        self.text.iter().map(|p| (p, false)).chain(self.html.iter().map(|p| (p, true)))
    }
}

/// A rendered template, ready for a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// The subject on one line, if the variant has one (never for SMS).
    pub subject: Option<String>,
    /// The plain-text body, without trailing whitespace. For SMS: one message at most.
    pub text: String,
    /// The HTML body, if the variant has one (never for SMS).
    pub html: Option<String>,
    /// The language of the variant used (the default language after a fallback).
    pub language: String,
    /// The channel of the variant used (`default` after a fallback).
    pub channel: String,
    /// Whether the SMS text was cut to fit one message (it then ends in `...`).
    pub truncated: bool,
}

/// Labels of a variant's parts in errors.
pub(crate) struct Labels {
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

/// A workspace's templates, partials and script helpers, compiled and ready to render.
///
/// Templates are chosen by purpose, channel and language; see [`TemplateSet::select`] for the
/// fallbacks. The set is `Send + Sync`: share it behind an `Arc` and swap it when a template
/// changes.
pub struct TemplateSet {
    default_language: String,
    limits: Limits,
    /// By purpose; a purpose has a handful of variants, so a scan finds one without allocating.
    variants: HashMap<String, Vec<Variant>>,
    /// By name, then language.
    partials: BTreeMap<String, BTreeMap<String, Partial>>,
    /// Script helpers' sources, by name.
    scripts: BTreeMap<String, String>,
    /// Renders subjects and text bodies: nothing is escaped.
    text: Handlebars<'static>,
    /// Renders HTML bodies: values are HTML-escaped.
    html: Handlebars<'static>,
    /// Partial names registered in both registries, see [`compile::partial_alias`].
    aliases: Vec<String>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet")
            .field("default_language", &self.default_language)
            .field("variants", &self.variants.values().map(Vec::len).sum::<usize>())
            .field("partials", &self.partials.keys().collect::<Vec<_>>())
            .field("scripts", &self.scripts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TemplateSet {
    /// An empty set whose fallback language is `default_language`, with the default
    /// [`Limits`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] if the language is not a primary language tag (`de`, `en`).
    pub fn new(default_language: &str) -> Result<Self, Error> {
        Self::with_limits(default_language, Limits::default())
    }

    /// An empty set with these limits.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if the language is not a primary language tag (`de`, `en`).
    pub fn with_limits(default_language: &str, limits: Limits) -> Result<Self, Error> {
        let default_language = check_language(default_language)?;
        Ok(TemplateSet {
            default_language,
            text: registry(false, &limits),
            html: registry(true, &limits),
            limits,
            variants: HashMap::new(),
            partials: BTreeMap::new(),
            scripts: BTreeMap::new(),
            aliases: Vec::new(),
        })
    }

    /// The language used when a template does not exist in the one asked for.
    pub fn default_language(&self) -> &str {
        &self.default_language
    }

    /// The limits the set was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every variant in the set, in no particular order.
    pub fn variants(&self) -> impl Iterator<Item = &Variant> {
        self.variants.values().flatten()
    }

    /// Adds (or replaces) the variant of `purpose` for `channel` and `language`, compiling
    /// every part at once.
    ///
    /// Every helper the template calls must exist already (built in, or a script helper
    /// registered before), and every partial it includes must exist in its language or the
    /// default language.
    ///
    /// # Errors
    /// [`Error::Syntax`], [`Error::UnknownHelper`], [`Error::UnknownPartial`] and
    /// [`Error::Unsupported`] with the part, line and column; [`Error::SourceTooLarge`],
    /// [`Error::TooManyTemplates`], [`Error::InvalidName`]; [`Error::Invalid`] for an SMS
    /// variant with a subject or HTML body. The set is unchanged on error.
    pub fn add_template(
        &mut self,
        purpose: &str,
        channel: &str,
        language: &str,
        source: TemplateSource<'_>,
    ) -> Result<(), Error> {
        let name = format!("{purpose}/{channel}/{language}");
        let labels = Labels { subject: format!("{name} (subject)"), html: format!("{name} (html)"), text: name };
        self.add_template_labeled(purpose, channel, language, source, labels)
    }

    pub(crate) fn add_template_labeled(
        &mut self,
        purpose: &str,
        channel: &str,
        language: &str,
        source: TemplateSource<'_>,
        labels: Labels,
    ) -> Result<(), Error> {
        check_name(purpose, "purpose")?;
        check_name(channel, "channel")?;
        let language = check_language(language)?;
        if channel == SMS_CHANNEL && (source.subject.is_some() || source.html.is_some()) {
            return Err(Error::Invalid {
                template: labels.text,
                message: "an SMS has neither a subject nor an HTML body; give it a text body only".to_owned(),
            });
        }
        let exists = self.select_exact(purpose, channel, &language).is_some();
        if !exists && self.count() >= self.limits.max_templates {
            return Err(Error::TooManyTemplates { limit: self.limits.max_templates });
        }
        let subject = source.subject.map(|s| self.compile_part(labels.subject, s, &language)).transpose()?;
        let text = self.compile_part(labels.text, source.text, &language)?;
        let html = source.html.map(|s| self.compile_part(labels.html, s, &language)).transpose()?;
        let variant =
            Variant { purpose: purpose.to_owned(), channel: channel.to_owned(), language, subject, text, html };
        for (part, html) in variant.parts() {
            self.check_includes(part, &variant.language, html)?;
        }
        let new_language = !self.languages().contains(variant.language.as_str());
        let list = self.variants.entry(variant.purpose.clone()).or_default();
        list.retain(|v| !(v.channel == variant.channel && v.language == variant.language));
        list.push(variant);
        if new_language {
            self.register_partials();
        }
        Ok(())
    }

    /// Removes a variant; returns whether it existed.
    pub fn remove_template(&mut self, purpose: &str, channel: &str, language: &str) -> bool {
        let Some(list) = self.variants.get_mut(purpose) else { return false };
        let before = list.len();
        list.retain(|v| !(v.channel == channel && v.language == language));
        let removed = list.len() < before;
        if list.is_empty() {
            self.variants.remove(purpose);
        }
        removed
    }

    /// Adds (or replaces) the partial `name` in `language`, included as `{{> name}}`.
    ///
    /// A template includes the partial of its own language, or the default language's if
    /// there is none. Partials may include partials, in any order of adding; call
    /// [`TemplateSet::check`] when all are in.
    ///
    /// # Errors
    /// As [`TemplateSet::add_template`], and [`Error::PartialCycle`] if partials would include
    /// each other without end. The set is unchanged on error.
    pub fn add_partial(&mut self, name: &str, language: &str, source: PartialSource<'_>) -> Result<(), Error> {
        let label = format!("partial {name}/{language}");
        self.add_partial_labeled(name, language, source, (format!("{label} (html)"), label))
    }

    /// `labels` is (html, text).
    pub(crate) fn add_partial_labeled(
        &mut self,
        name: &str,
        language: &str,
        source: PartialSource<'_>,
        (html_label, text_label): (String, String),
    ) -> Result<(), Error> {
        check_name(name, "partial")?;
        let language = check_language(language)?;
        if source.text.is_none() && source.html.is_none() {
            return Err(Error::Invalid {
                template: text_label,
                message: "a partial needs a text or an HTML source".to_owned(),
            });
        }
        let exists = self.partials.get(name).is_some_and(|p| p.contains_key(&language));
        if !exists && self.count() >= self.limits.max_templates {
            return Err(Error::TooManyTemplates { limit: self.limits.max_templates });
        }
        // Includes are not checked here but by `check`: partials may come in any order.
        let text = source.text.map(|s| self.compile_part(text_label, s, &language)).transpose()?;
        let html = source.html.map(|s| self.compile_part(html_label, s, &language)).transpose()?;
        let previous =
            self.partials.entry(name.to_owned()).or_default().insert(language.clone(), Partial { text, html });
        if let Some(cycle) = self.partial_cycle() {
            let languages = self.partials.entry(name.to_owned()).or_default();
            match previous {
                Some(previous) => languages.insert(language, previous),
                None => languages.remove(&language),
            };
            if languages.is_empty() {
                self.partials.remove(name);
            }
            return Err(cycle);
        }
        self.register_partials();
        Ok(())
    }

    /// Removes a partial; returns whether it existed. Templates that include it and have no
    /// fallback fail to render afterwards; [`TemplateSet::check`] finds them.
    pub fn remove_partial(&mut self, name: &str, language: &str) -> bool {
        let Some(languages) = self.partials.get_mut(name) else { return false };
        let removed = languages.remove(language).is_some();
        if languages.is_empty() {
            self.partials.remove(name);
        }
        if removed {
            self.register_partials();
        }
        removed
    }

    /// Adds (or replaces) a helper written in Rhai, called as `{{name a b key=c}}`.
    ///
    /// The script sees the parameters as the array `params` and the hash as the map `hash`,
    /// and returns the value to render: `params[0].to_upper()`. It runs on a hardened engine:
    /// at most [`Limits::script_operations`] operations per call, call depth 16, strings of
    /// 64 KiB, arrays of 1,024 and maps of 256 entries, no `eval`, no modules, no time, and
    /// `print`/`debug` go nowhere. A call that breaks a limit fails the render with
    /// [`Error::ScriptFailed`] naming the helper.
    ///
    /// Register script helpers before the templates that call them.
    ///
    /// # Errors
    /// [`Error::ScriptSyntax`] with line and column; [`Error::ReservedHelper`] for the name of
    /// a built-in helper; [`Error::InvalidName`], [`Error::SourceTooLarge`],
    /// [`Error::TooManyScriptHelpers`].
    pub fn register_script_helper(&mut self, name: &str, source: &str) -> Result<(), Error> {
        check_helper_name(name)?;
        if helper::is_built_in(name) {
            return Err(Error::ReservedHelper { helper: name.to_owned() });
        }
        self.check_size(&format!("script helper `{name}`"), source)?;
        if !self.scripts.contains_key(name) && self.scripts.len() >= self.limits.max_script_helpers {
            return Err(Error::TooManyScriptHelpers { limit: self.limits.max_script_helpers });
        }
        // Compile once ourselves for the position of a syntax error: Handlebars' own error type
        // for it is not public. Both registries use the same hardened engine settings.
        if let Err(e) = self.text.engine().compile(source) {
            return Err(Error::ScriptSyntax {
                helper: name.to_owned(),
                line: e.1.line().unwrap_or(1),
                column: e.1.position().unwrap_or(1),
                message: e.0.to_string(),
            });
        }
        for registry in [&mut self.text, &mut self.html] {
            registry.register_script_helper(name, source).map_err(|e| Error::ScriptSyntax {
                helper: name.to_owned(),
                line: 1,
                column: 1,
                message: e.to_string(),
            })?;
        }
        self.scripts.insert(name.to_owned(), source.to_owned());
        Ok(())
    }

    /// The variant to use for `purpose` on `channel` for a customer speaking `language`.
    ///
    /// `language` may carry a region (`de-AT`, `en_GB`); only the primary tag counts. The
    /// first that exists wins: (channel, language), (channel, default language),
    /// (`default` channel, language), (`default` channel, default language).
    pub fn select(&self, purpose: &str, channel: &str, language: &str) -> Option<&Variant> {
        let language = primary(language);
        let default = self.default_language.as_str();
        self.select_exact(purpose, channel, language)
            .or_else(|| self.select_exact(purpose, channel, default))
            .or_else(|| self.select_exact(purpose, DEFAULT_CHANNEL, language))
            .or_else(|| self.select_exact(purpose, DEFAULT_CHANNEL, default))
    }

    fn select_exact(&self, purpose: &str, channel: &str, language: &str) -> Option<&Variant> {
        self.variants
            .get(purpose)?
            .iter()
            .find(|v| v.channel.eq_ignore_ascii_case(channel) && v.language.eq_ignore_ascii_case(language))
    }

    /// Renders the variant [`TemplateSet::select`] picks against `data` (the ticket,
    /// customer, agent, workspace … as JSON).
    ///
    /// Missing values render empty. For the `sms` channel the text is made plain (typographic
    /// quotes, dashes and `…` become `"`, `-` and `...`) and cut to one message, 160 GSM
    /// characters (70 if it needs UCS-2), ending in `...`; [`Rendered::truncated`] says so.
    /// Use [`TemplateSet::preview`] to get an error instead.
    ///
    /// # Errors
    /// [`Error::NotFound`] without a variant or fallback; [`Error::Render`],
    /// [`Error::ScriptFailed`] and [`Error::OutputTooLarge`] naming the part (or partial), line
    /// and column.
    pub fn render(
        &self,
        purpose: &str,
        channel: &str,
        language: &str,
        data: &serde_json::Value,
    ) -> Result<Rendered, Error> {
        self.render_with(purpose, channel, language, data, false)
    }

    /// Renders like [`TemplateSet::render`], but an SMS longer than one message is an
    /// [`Error::SmsTooLong`] naming its length instead of being cut: for checking a template
    /// against sample data before it goes live.
    ///
    /// # Errors
    /// As [`TemplateSet::render`], and [`Error::SmsTooLong`].
    pub fn preview(
        &self,
        purpose: &str,
        channel: &str,
        language: &str,
        data: &serde_json::Value,
    ) -> Result<Rendered, Error> {
        self.render_with(purpose, channel, language, data, true)
    }

    fn render_with(
        &self,
        purpose: &str,
        channel: &str,
        language: &str,
        data: &serde_json::Value,
        strict: bool,
    ) -> Result<Rendered, Error> {
        let variant = self.select(purpose, channel, language).ok_or_else(|| Error::NotFound {
            purpose: purpose.to_owned(),
            channel: channel.to_owned(),
            language: primary(language).to_owned(),
            default_language: self.default_language.clone(),
        })?;
        let locale = Locale::of(&variant.language);
        let ctx = Context::from(data.clone());
        // One budget for every part of the variant; ends when this function returns.
        let _budget = budget::start(Budget {
            steps: self.limits.max_steps,
            depth: self.limits.max_depth,
            time: std::time::Duration::from_millis(self.limits.max_render_ms),
        });
        // A fallback variant may have a subject or HTML body; an SMS carries neither.
        let sms = channel.eq_ignore_ascii_case(SMS_CHANNEL);
        let subject = match &variant.subject {
            Some(part) if !sms => Some(one_line(&self.render_part(&self.text, part, &ctx, locale)?)),
            _ => None,
        };
        let html = match &variant.html {
            Some(part) if !sms => Some(self.render_part(&self.html, part, &ctx, locale)?),
            _ => None,
        };
        let mut text = self.render_part(&self.text, &variant.text, &ctx, locale)?;
        text.truncate(text.trim_end().len());
        text.drain(..text.len() - text.trim_start_matches(['\n', '\r']).len());
        let mut truncated = false;
        if sms {
            text = sms::plain(&text);
            let length = sms::length(&text);
            if length.units > length.limit {
                if strict {
                    return Err(Error::SmsTooLong {
                        template: variant.text.label.clone(),
                        length: length.units,
                        limit: length.limit,
                        encoding: length.encoding,
                    });
                }
                (text, truncated) = sms::fit(&text);
            }
        }
        Ok(Rendered {
            subject,
            text,
            html,
            language: variant.language.clone(),
            channel: variant.channel.clone(),
            truncated,
        })
    }

    fn render_part(
        &self,
        registry: &Handlebars<'static>,
        part: &Part,
        ctx: &Context,
        locale: Locale,
    ) -> Result<String, Error> {
        let mut rc = RenderContext::new(None);
        helper::register_localized(&mut rc, locale);
        let mut out = Capped { buf: String::new(), limit: self.limits.max_output_bytes, overflowed: false };
        match part.compiled.template.render(registry, ctx, &mut rc, &mut out) {
            Ok(()) => Ok(out.buf),
            Err(e) => Err(self.render_error(e, &part.label, out.overflowed)),
        }
    }

    fn render_error(&self, e: RenderError, label: &str, overflowed: bool) -> Error {
        if overflowed {
            return Error::OutputTooLarge { template: label.to_owned(), limit: self.limits.max_output_bytes };
        }
        let template = e.template_name.clone().unwrap_or_else(|| label.to_owned());
        let (line, column) = (e.line_no, e.column_no);
        match budget::exceeded() {
            Some(Exceeded::Steps) => {
                return Error::TooManySteps { template, line, column, limit: self.limits.max_steps };
            }
            Some(Exceeded::Depth) => return Error::TooDeep { template, line, column, limit: self.limits.max_depth },
            Some(Exceeded::Time) => {
                return Error::TooSlow { template, line, column, limit_ms: self.limits.max_render_ms };
            }
            None => {}
        }
        let message = match e.reason() {
            RenderErrorReason::ScriptValueError(failure) => {
                let helper = match (line, column) {
                    (Some(line), Some(column)) => self.script_helpers_at(&template, (line, column)),
                    _ => None,
                };
                return Error::ScriptFailed {
                    helper: helper.unwrap_or_else(|| "?".to_owned()),
                    template,
                    line,
                    column,
                    message: script::describe(failure),
                };
            }
            RenderErrorReason::PartialNotFound(alias) => {
                let (name, language) = compile::split_alias(alias);
                format!(
                    "partial `{name}` exists neither in `{language}` nor in the default language `{}`; \
                     add partials/{name}.{language}.hbs",
                    self.default_language
                )
            }
            RenderErrorReason::Other(message) => message.clone(),
            other => crate::error::lowercase_first(&other.to_string()),
        };
        Error::Render { template, line, column, message }
    }

    /// The script helpers called in the tag at `at` of the part or partial labelled `label`.
    fn script_helpers_at(&self, label: &str, at: (usize, usize)) -> Option<String> {
        let variants = self.variants().flat_map(Variant::parts);
        let partials = self.partials.values().flat_map(BTreeMap::values).flat_map(Partial::parts);
        let (part, _) = variants.chain(partials).find(|(p, _)| p.label == label)?;
        let mut names: Vec<String> = compile::helpers_at(&part.compiled.template, at)
            .into_iter()
            .filter(|n| self.scripts.contains_key(n))
            .collect();
        names.dedup();
        (!names.is_empty()).then(|| names.join("` or `"))
    }

    /// Checks that every partial included anywhere exists in the including template's
    /// language or the default language. [`TemplateSet::add_template`] checks its own
    /// includes; this finds includes in partials, and templates whose partial was removed.
    ///
    /// # Errors
    /// The first [`Error::UnknownPartial`] found.
    pub fn check(&self) -> Result<(), Error> {
        for variant in self.variants() {
            for (part, html) in variant.parts() {
                self.check_includes(part, &variant.language, html)?;
            }
        }
        for languages in self.partials.values() {
            for (language, partial) in languages {
                for (part, html) in partial.parts() {
                    self.check_includes(part, language, html)?;
                }
            }
        }
        Ok(())
    }

    fn check_includes(&self, part: &Part, language: &str, html: bool) -> Result<(), Error> {
        match part.compiled.includes.iter().find(|i| self.resolve(&i.partial, language, html).is_none()) {
            Some(include) => Err(Error::UnknownPartial {
                template: part.label.clone(),
                line: include.line,
                column: include.column,
                partial: include.partial.clone(),
                language: language.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The partial `name` for a template in `language`: its own language's, else the default
    /// language's. Stays in that language even if it lacks the part asked for, so a German
    /// email never mixes in an English greeting.
    fn resolve_partial(&self, name: &str, language: &str) -> Option<(&str, &Partial)> {
        let languages = self.partials.get(name)?;
        [language, self.default_language.as_str()]
            .into_iter()
            .find_map(|l| languages.get_key_value(l).map(|(l, p)| (l.as_str(), p)))
    }

    fn resolve(&self, name: &str, language: &str, html: bool) -> Option<&Part> {
        self.resolve_partial(name, language)?.1.part(html)
    }

    fn compile_part(&self, label: String, source: &str, language: &str) -> Result<Part, Error> {
        self.check_size(&label, source)?;
        let is_helper = |name: &str| helper::is_built_in(name) || self.scripts.contains_key(name);
        let compiled = compile::compile(&label, source, language, &is_helper)?;
        Ok(Part { label, source: source.to_owned(), compiled })
    }

    fn check_size(&self, what: &str, source: &str) -> Result<(), Error> {
        if source.len() > self.limits.max_source_bytes {
            return Err(Error::SourceTooLarge {
                what: what.to_owned(),
                size: source.len(),
                limit: self.limits.max_source_bytes,
            });
        }
        Ok(())
    }

    fn count(&self) -> usize {
        self.variants.values().map(Vec::len).sum::<usize>() + self.partials.values().map(BTreeMap::len).sum::<usize>()
    }

    /// Every language a template or partial is written in, and the default language.
    fn languages(&self) -> BTreeSet<&str> {
        let mut languages: BTreeSet<&str> = self.variants().map(|v| v.language.as_str()).collect();
        languages.extend(self.partials.values().flat_map(BTreeMap::keys).map(String::as_str));
        languages.insert(&self.default_language);
        languages
    }

    /// Registers `name@language` in both registries for every partial and every language, each
    /// pointing at the partial that language resolves to. Partials are few; this runs when a
    /// partial or a new language comes in, never while rendering.
    fn register_partials(&mut self) {
        for alias in std::mem::take(&mut self.aliases) {
            self.text.unregister_template(&alias);
            self.html.unregister_template(&alias);
        }
        let mut text = Vec::new();
        let mut html = Vec::new();
        let languages = self.languages();
        for name in self.partials.keys() {
            for &language in &languages {
                let alias = compile::partial_alias(name, language);
                if let Some(part) = self.resolve(name, language, false) {
                    text.push((alias.clone(), part.compiled.template.clone()));
                }
                if let Some(part) = self.resolve(name, language, true) {
                    html.push((alias, part.compiled.template.clone()));
                }
            }
        }
        let mut aliases = BTreeSet::new();
        for (alias, template) in text {
            self.text.register_template(&alias, template);
            aliases.insert(alias);
        }
        for (alias, template) in html {
            self.html.register_template(&alias, template);
            aliases.insert(alias);
        }
        self.aliases = aliases.into_iter().collect();
    }

    /// A cycle of partials including each other, as `a/de → b/de → a/de`, if there is one,
    /// pointing at the include that closes it.
    fn partial_cycle(&self) -> Option<Error> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Open,
            Done,
        }
        type Node<'a> = (&'a str, &'a str);
        fn visit<'a>(
            set: &'a TemplateSet,
            node: Node<'a>,
            marks: &mut HashMap<Node<'a>, Mark>,
            path: &mut Vec<Node<'a>>,
        ) -> Option<Error> {
            let partial = set.partials.get(node.0).and_then(|l| l.get(node.1))?;
            marks.insert(node, Mark::Open);
            path.push(node);
            for (part, _) in partial.parts() {
                for include in &part.compiled.includes {
                    let Some((language, _)) = set.resolve_partial(&include.partial, node.1) else { continue };
                    let name = set.partials.get_key_value(&include.partial).map_or("", |(k, _)| k.as_str());
                    let next = (name, language);
                    match marks.get(&next) {
                        Some(Mark::Done) => {}
                        Some(Mark::Open) => {
                            let start = path.iter().position(|n| *n == next).unwrap_or(0);
                            let cycle: Vec<String> =
                                path[start..].iter().chain([&next]).map(|(n, l)| format!("{n}/{l}")).collect();
                            return Some(Error::PartialCycle {
                                template: part.label.clone(),
                                line: include.line,
                                column: include.column,
                                cycle: cycle.join(" → "),
                            });
                        }
                        None => {
                            if let Some(e) = visit(set, next, marks, path) {
                                return Some(e);
                            }
                        }
                    }
                }
            }
            path.pop();
            marks.insert(node, Mark::Done);
            None
        }
        let mut marks = HashMap::new();
        for (name, languages) in &self.partials {
            for language in languages.keys() {
                if marks.contains_key(&(name.as_str(), language.as_str())) {
                    continue;
                }
                if let Some(e) = visit(self, (name, language), &mut marks, &mut Vec::new()) {
                    return Some(e);
                }
            }
        }
        None
    }
}

/// A registry for text (`escape == false`) or HTML.
fn registry(escape: bool, limits: &Limits) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    // First of all: script helpers run on this engine, and Handlebars' default one is
    // unlimited. See `script`.
    registry.set_engine(script::engine(limits.script_operations));
    registry.set_strict_mode(false);
    // Dev mode re-reads templates from files on every render; we have no files to re-read.
    registry.set_dev_mode(false);
    if !escape {
        registry.register_escape_fn(handlebars::no_escape);
    }
    helper::register(&mut registry);
    registry.register_helper(budget::STEP, Box::new(budget::Step));
    registry
}

/// Caps the rendered output: a template looping over a huge list stops at the limit instead of
/// filling memory.
struct Capped {
    buf: String,
    limit: usize,
    overflowed: bool,
}

impl Output for Capped {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        if self.buf.len() + seg.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the output limit is reached"));
        }
        self.buf.push_str(seg);
        Ok(())
    }
}

/// `purpose`, `channel` and partial names: what file names and URLs can carry unchanged.
pub(crate) fn check_name(value: &str, what: &'static str) -> Result<(), Error> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && value.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            value: value.to_owned(),
            rule: "use 1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter",
        })
    }
}

/// Helper names: identifiers Handlebars and Rhai users both know, `formatDate` included.
fn check_helper_name(value: &str) -> Result<(), Error> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "helper",
            value: value.to_owned(),
            rule: "use 1 to 64 of A-Z, a-z, 0-9 and `_`, starting with a letter",
        })
    }
}

/// A primary language tag, lowercased: `de`, `en`, `fil`.
fn check_language(value: &str) -> Result<String, Error> {
    if (2..=3).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Error::InvalidName {
            what: "language",
            value: value.to_owned(),
            rule: "use a primary language tag of 2 or 3 letters, like `de` or `en`, without a region",
        })
    }
}

/// `de` of `de-AT` or `de_AT`.
fn primary(language: &str) -> &str {
    language.split(['-', '_']).next().unwrap_or(language).trim()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set() -> TemplateSet {
        TemplateSet::new("en").unwrap_or_else(|e| panic!("{e}"))
    }

    fn add(set: &mut TemplateSet, purpose: &str, channel: &str, language: &str, text: &str) {
        set.add_template(purpose, channel, language, TemplateSource::text(text)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The error of adding `text` as a chat template.
    fn add_err(set: &mut TemplateSet, text: &str) -> Error {
        match set.add_template("t", "chat", "en", TemplateSource::text(text)) {
            Ok(()) => panic!("{text:?} compiled"),
            Err(e) => e,
        }
    }

    fn render(set: &TemplateSet, purpose: &str, channel: &str, language: &str, data: &serde_json::Value) -> Rendered {
        set.render(purpose, channel, language, data).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selection_falls_back_to_default_language_then_default_channel() {
        let mut set = set();
        for (channel, language) in [("email", "de"), ("email", "en"), ("default", "fr"), ("default", "en")] {
            add(&mut set, "ack", channel, language, &format!("{channel}/{language}"));
        }
        add(&mut set, "only_default", "default", "en", "default/en");
        let cases = [
            (("ack", "email", "de"), Some("email/de")),
            (("ack", "email", "de-CH"), Some("email/de")),
            (("ack", "EMAIL", "DE_at"), Some("email/de")),
            (("ack", "email", "it"), Some("email/en")),
            (("ack", "email", "fr"), Some("email/en")),
            (("ack", "chat", "fr"), Some("default/fr")),
            (("ack", "chat", "de"), Some("default/en")),
            (("only_default", "sms", "de"), Some("default/en")),
            (("missing", "email", "en"), None),
        ];
        for ((purpose, channel, language), expected) in cases {
            let found = set.select(purpose, channel, language).map(|v| format!("{}/{}", v.channel(), v.language()));
            assert_eq!(found.as_deref(), expected, "{purpose} {channel} {language}");
        }
        let e = set.render("missing", "email", "de-AT", &json!({})).expect_err("no template");
        assert_eq!(
            e.to_string(),
            "no template `missing` for channel `email` in `de` nor a fallback; add missing.default.en.hbs"
        );
    }

    #[test]
    fn html_is_escaped_in_html_bodies_only() {
        let mut set = set();
        let source = TemplateSource {
            subject: Some("Re: {{ticket.subject}}\n"),
            text: "{{ticket.subject}} / {{{ticket.subject}}} / {{upper ticket.subject}}",
            html: Some("<p>{{ticket.subject}}</p><p>{{{ticket.subject}}}</p><p>{{upper ticket.subject}}</p>"),
        };
        set.add_template("t", "email", "en", source).unwrap_or_else(|e| panic!("{e}"));
        let data = json!({"ticket": {"subject": "<b>Tom & \"Jerry\"</b>\r\nBcc: x@example.org"}});
        let out = render(&set, "t", "email", "en", &data);
        assert_eq!(out.subject.as_deref(), Some("Re: <b>Tom & \"Jerry\"</b> Bcc: x@example.org"));
        assert_eq!(
            out.text,
            "<b>Tom & \"Jerry\"</b>\r\nBcc: x@example.org / <b>Tom & \"Jerry\"</b>\r\nBcc: x@example.org / \
             <B>TOM & \"JERRY\"</B>\r\nBCC: X@EXAMPLE.ORG"
        );
        assert_eq!(
            out.html.as_deref(),
            Some(
                "<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;\r\nBcc: x@example.org</p>\
                 <p><b>Tom & \"Jerry\"</b>\r\nBcc: x@example.org</p>\
                 <p>&lt;B&gt;TOM &amp; &quot;JERRY&quot;&lt;/B&gt;\r\nBCC: X@EXAMPLE.ORG</p>"
            )
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let cases = [
            (
                "Guten Tag,\n\nGrüße {{ticket.number\n",
                "t/chat/en: line 3, column 7: this `{{` is never closed; add `}}`",
            ),
            ("Grüße {{ticket.number}\n {{x}}", "t/chat/en: line 1, column 22: invalid Handlebars syntax"),
            (
                "{{#if a}}\n  x\n{{/unless}}",
                "t/chat/en: line 3, column 1: helper \"if\" was opened, but \"unless\" is closing",
            ),
            (
                "a\n{{#if a}}\n{{#each b}}{{/each}}",
                "t/chat/en: line 2, column 1: `{{#if}}` is never closed; add `{{/if}}`",
            ),
            (
                "{{!-- }} --}}\n{{#each b}}{{{c}}}{{/each}}\n{{#with x}}",
                "t/chat/en: line 3, column 1: `{{#with}}` is never closed",
            ),
            ("a {{ticket.number x=}}", "t/chat/en: line 1, column 19: invalid Handlebars syntax"),
            ("a {{upper ''}} {{upper 1.2.3}}", "t/chat/en: line 1, column 27: invalid Handlebars syntax"),
            ("a\n {{upper ''}} {{upper 1.}}", "t/chat/en: line 2, column 23: invalid parameter \"1.\""),
        ];
        for (source, expected) in cases {
            let e = add_err(&mut set(), source).to_string();
            assert!(e.starts_with(expected), "{source:?}: {e}");
        }
    }

    #[test]
    fn unknown_helpers_are_refused_with_line_and_column() {
        let cases = [
            ("Grüße {{frobnicate ticket}}", "frobnicate", (1, 9)),
            ("a\n{{#if x}}\n  {{frobnicate ticket \"x\"}}\n{{/if}}", "frobnicate", (3, 5)),
            ("{{#each items}}\n{{upper (frob this)}}{{/each}}", "frob", (2, 10)),
            ("{{#frob x}}y{{/frob}}", "frob", (1, 4)),
            ("{{#frob}}y{{/frob}}", "frob", (1, 4)),
            ("{{#if a}}x{{else frob b}}y{{/if}}", "frob", (1, 1)),
            ("{{upper x key=(frob y)}}", "frob", (1, 16)),
            ("{{> greeting name=(frob y)}}", "frob", (1, 20)),
            ("{{{frob x}}}", "frob", (1, 4)),
        ];
        for (source, helper, (line, column)) in cases {
            match add_err(&mut set(), source) {
                Error::UnknownHelper { helper: h, line: l, column: c, .. } => {
                    assert_eq!((h.as_str(), l, c), (helper, line, column), "{source:?}")
                }
                other => panic!("{source:?}: {other}"),
            }
        }
        let e = add_err(&mut set(), "\n  {{foo bar}}").to_string();
        assert_eq!(
            e,
            "t/chat/en: line 2, column 5: unknown helper `foo`; use a built-in helper or register a script \
             helper of that name before adding the template"
        );
    }

    #[test]
    fn unknown_variables_render_empty() {
        let mut set = set();
        add(&mut set, "t", "chat", "en", "[{{nothing}}][{{ticket.nothing}}][{{#if nothing}}x{{/if}}]{{upper}}");
        assert_eq!(render(&set, "t", "chat", "en", &json!({})).text, "[][][]");
    }

    #[test]
    fn built_in_handlebars_helpers_work() {
        let mut set = set();
        let source = "{{#each items}}{{@index}}:{{this}}{{#unless @last}}, {{/unless}}{{/each}} \
                      {{#if (eq status \"open\")}}open{{else if (gt count 1)}}many{{else}}closed{{/if}} \
                      {{len items}} {{#with customer}}{{name}}{{/with}} {{lookup items 1}}";
        add(&mut set, "t", "chat", "en", source);
        let data = json!({"items": ["a", "b"], "status": "open", "count": 2, "customer": {"name": "Ana"}});
        assert_eq!(render(&set, "t", "chat", "en", &data).text, "0:a, 1:b open 2 Ana b");
    }

    #[test]
    fn partials_follow_the_language() {
        let mut set = set();
        set.add_partial("greeting", "de", PartialSource::text("Guten Tag {{name}},\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        set.add_partial(
            "greeting",
            "en",
            PartialSource { text: Some("Hello {{name}},\n"), html: Some("<p>Hello {{name}},</p>") },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        set.add_partial("sign", "en", PartialSource::text("{{> greeting}}-- {{name}}"))
            .unwrap_or_else(|e| panic!("{e}"));
        for language in ["de", "en", "fr"] {
            let source = TemplateSource {
                subject: None,
                text: "{{> greeting}}\nText\n{{> sign}}",
                html: Some("{{> greeting}}"),
            };
            set.add_template("t", "email", language, source).unwrap_or_else(|e| panic!("{e}"));
        }
        let data = json!({"name": "<Ana>"});
        let de = render(&set, "t", "email", "de", &data);
        // A partial alone on its line replaces the line, as in Handlebars.js.
        assert_eq!(de.text, "Guten Tag <Ana>,\nText\nHello <Ana>,\n-- <Ana>");
        assert_eq!(de.html.as_deref(), Some("Guten Tag &lt;Ana&gt;,\n"));
        let fr = render(&set, "t", "email", "fr", &data);
        assert_eq!(fr.language, "fr");
        assert_eq!(fr.text, "Hello <Ana>,\nText\nHello <Ana>,\n-- <Ana>");
        assert_eq!(fr.html.as_deref(), Some("<p>Hello &lt;Ana&gt;,</p>"));
        assert!(set.check().is_ok());
    }

    #[test]
    fn partial_problems_are_refused() {
        let mut set = set();
        match add_err(&mut set, "a\n  {{> greting}}") {
            Error::UnknownPartial { partial, line, column, language, .. } => {
                assert_eq!((partial.as_str(), line, column, language.as_str()), ("greting", 2, 7, "en"))
            }
            other => panic!("{other}"),
        }
        let e = add_err(&mut set, "{{> (lookup this \"x\")}}");
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = add_err(&mut set, "{{*frob}}");
        assert!(e.to_string().contains("decorator `frob` is not available"), "{e}");

        set.add_partial("a", "en", PartialSource::text("{{> b}}")).unwrap_or_else(|e| panic!("{e}"));
        let e = set.check().expect_err("b is missing");
        assert!(e.to_string().starts_with("partial a/en: line 1, column 5: partial `b` exists neither"), "{e}");
        set.add_partial("b", "de", PartialSource::text("b")).unwrap_or_else(|e| panic!("{e}"));
        set.add_partial("b", "en", PartialSource::text("{{> c}}")).unwrap_or_else(|e| panic!("{e}"));
        let e = set.add_partial("c", "en", PartialSource::text("{{> a}}")).expect_err("a cycle");
        assert_eq!(
            e.to_string(),
            "partial c/en: line 1, column 5: partials would include each other in a cycle (a/en → b/en → c/en → a/en); \
             remove one of the includes"
        );
        // The German partials include the German ones: no cycle until `b` includes `c`.
        set.add_partial("c", "de", PartialSource::text("{{> a}}")).unwrap_or_else(|e| panic!("{e}"));
        set.add_partial("a", "de", PartialSource::text("{{> b}}")).unwrap_or_else(|e| panic!("{e}"));
        let e = set.add_partial("b", "de", PartialSource::text("{{> c}}")).expect_err("a German cycle");
        assert!(e.to_string().contains("(a/de → b/de → c/de → a/de)"), "{e}");
        let e = set.add_partial("d", "en", PartialSource::text("{{> d}}")).expect_err("self");
        assert!(e.to_string().contains("(d/en → d/en)"), "{e}");
        // The refused partials left nothing behind.
        assert!(!set.partials.contains_key("d"));
        assert_eq!(
            set.resolve_partial("b", "de").map(|(l, p)| (l, p.text.as_ref().map(|t| t.source.as_str()))),
            Some(("de", Some("b")))
        );

        let mut set = super::tests::set();
        set.add_partial("inline", "en", PartialSource::text("x")).unwrap_or_else(|e| panic!("{e}"));
        add(&mut set, "t", "chat", "en", "{{#*inline \"own\"}}mine{{/inline}}{{> own}}{{> inline}}");
        assert_eq!(render(&set, "t", "chat", "en", &json!({})).text, "minex");
        assert!(set.remove_partial("inline", "en"));
        let e = set.render("t", "chat", "en", &json!({})).expect_err("partial removed");
        assert!(e.to_string().contains("partial `inline` exists neither in `en` nor in the default language"), "{e}");
    }

    #[test]
    fn sms_is_cut_at_render_and_refused_in_preview() {
        let mut set = set();
        add(&mut set, "t", "sms", "de", "Ihre Anfrage „{{subject}}“ – wir melden uns…");
        add(&mut set, "t", "default", "en", "{{subject}}");
        let e = set.add_template("t", "sms", "en", TemplateSource { subject: Some("x"), text: "y", html: None });
        assert!(matches!(e, Err(Error::Invalid { .. })), "{e:?}");

        let short = json!({"subject": "Paket"});
        let out = render(&set, "t", "sms", "de", &short);
        assert_eq!((out.text.as_str(), out.truncated), ("Ihre Anfrage \"Paket\" - wir melden uns...", false));
        let long = json!({"subject": "Paket ".repeat(40)});
        let out = render(&set, "t", "sms", "de", &long);
        assert!(out.truncated);
        assert_eq!(out.text.chars().count(), 160);
        assert!(out.text.ends_with("Paket Paket..."), "{}", out.text);
        let e = set.preview("t", "sms", "de", &long).expect_err("too long");
        assert_eq!(
            e.to_string(),
            "t/sms/de: the SMS is 275 GSM characters, more than the 160 one message holds; shorten the template"
        );
        // A fallback variant sent as SMS obeys the limit too.
        let out = render(&set, "t", "sms", "en", &json!({"subject": "ü".repeat(200)}));
        assert_eq!((out.channel.as_str(), out.text.chars().count(), out.truncated), ("default", 160, true));
    }

    #[test]
    fn script_helpers_run_limited() {
        let mut set = set();
        set.register_script_helper("shout", "params[0].to_upper() + \"!\"").unwrap_or_else(|e| panic!("{e}"));
        set.register_script_helper("spin", "let n = 0;\nloop { n += 1; }").unwrap_or_else(|e| panic!("{e}"));
        set.register_script_helper("grow", "let s = \"x\"; loop { s += s; }").unwrap_or_else(|e| panic!("{e}"));
        set.register_script_helper("hashy", "hash.greeting + \" \" + params.len()").unwrap_or_else(|e| panic!("{e}"));
        add(&mut set, "ok", "chat", "en", "{{shout name}} {{upper (shout name)}} {{hashy 1 2 greeting=\"hi\"}}");
        add(&mut set, "loop", "chat", "en", "Hello\n{{#if true}}\n  {{shout (spin name)}}\n{{/if}}");
        add(&mut set, "big", "chat", "en", "{{grow}}");
        assert_eq!(render(&set, "ok", "chat", "en", &json!({"name": "ana"})).text, "ANA! ANA! hi 2");
        match set.render("loop", "chat", "en", &json!({"name": "ana"})) {
            Err(Error::ScriptFailed { template, line, column, helper, message }) => {
                assert_eq!((template.as_str(), line, column), ("loop/chat/en", Some(3), Some(3)));
                assert_eq!(helper, "shout` or `spin");
                assert!(message.starts_with("too many operations"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = set.render("big", "chat", "en", &json!({})).expect_err("too large");
        assert!(
            e.to_string().starts_with("big/chat/en: line 1, column 1: script helper `grow` failed: length of string"),
            "{e}"
        );

        // The example of templates/README.md.
        let initials = "let parts = params[0].split(\" \");\nlet out = \"\";\n\
                        for p in parts { if p != \"\" { out += p.sub_string(0, 1) + \". \"; } }\nout.trim();\nout";
        set.register_script_helper("initials", initials).unwrap_or_else(|e| panic!("{e}"));
        add(&mut set, "initials", "chat", "en", "{{initials name}}");
        assert_eq!(render(&set, "initials", "chat", "en", &json!({"name": "Anna  Müller"})).text, "A. M.");

        let e = set.register_script_helper("broken", "let x = ;\n").expect_err("syntax");
        assert!(e.to_string().starts_with("script helper `broken`: line 1, column 9: "), "{e}");
        let e = set.register_script_helper("evil", "eval(\"1\")").expect_err("eval");
        assert!(matches!(e, Error::ScriptSyntax { .. }), "{e}");
        let e = set.register_script_helper("date", "1").expect_err("reserved");
        assert_eq!(e.to_string(), "`date` is a built-in helper; give the script helper another name");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_source_bytes: 100, max_output_bytes: 1000, max_templates: 2, ..Limits::default() };
        let mut set = TemplateSet::with_limits("en", limits).unwrap_or_else(|e| panic!("{e}"));
        let e = set.add_template("t", "chat", "en", TemplateSource::text(&"x".repeat(101))).expect_err("too large");
        assert_eq!(e.to_string(), "t/chat/en is 101 bytes, more than the limit of 100 bytes; shorten it");
        add(&mut set, "loop", "chat", "en", "{{#each items}}{{this}}{{/each}}");
        add(&mut set, "t", "chat", "en", "x");
        add(&mut set, "t", "chat", "en", "replacing does not count");
        let e = set.add_template("u", "chat", "en", TemplateSource::text("x")).expect_err("too many");
        assert!(matches!(e, Error::TooManyTemplates { limit: 2 }), "{e}");
        let e = set.add_partial("p", "en", PartialSource::text("x")).expect_err("too many");
        assert!(matches!(e, Error::TooManyTemplates { limit: 2 }), "{e}");
        let items: Vec<String> = (0..100).map(|_| "y".repeat(50)).collect();
        let e = set.render("loop", "chat", "en", &json!({"items": items})).expect_err("too much output");
        assert_eq!(
            e.to_string(),
            "loop/chat/en: the output would exceed 1000 bytes; shorten the template or the lists it loops over"
        );
        assert!(matches!(TemplateSet::new("deutsch"), Err(Error::InvalidName { what: "language", .. })));
        assert!(matches!(
            set.add_template("Ack!", "chat", "en", TemplateSource::text("x")),
            Err(Error::InvalidName { what: "purpose", .. })
        ));
    }

    /// Compiling costs tags × bytes (see `compile::TAG_BUDGET`); a source of 60 KB with 300 tags
    /// would take ~60 ms.
    #[test]
    fn sources_with_too_many_tags_for_their_size_are_refused() {
        let source = "x".repeat(60_000) + "{{a}}".repeat(300).as_str();
        let e = add_err(&mut set(), &source);
        assert_eq!(
            e.to_string(),
            "t/chat/en: 300 tags are too many for 61500 bytes (at most 272 at this size); move parts into \
             partials, each is compiled on its own"
        );
        add(&mut set(), "t", "chat", "en", &("x".repeat(60_000) + "{{a}}".repeat(250).as_str()));
    }

    /// Issue #11: a self-including inline partial passed the cycle check (inline partials were
    /// left out of it) and overflowed the stack when rendered, aborting the process.
    #[test]
    fn inline_partial_cycles_are_refused_with_line_and_column() {
        let cases = [
            // A self-including inline partial (the report's template).
            ("{{#*inline \"a\"}}{{> a}}{{/inline}}{{> a}}", (1, 21), "inline a → inline a"),
            // Mutual, over lines.
            (
                "{{#*inline \"a\"}}{{> b}}{{/inline}}\n{{#*inline \"b\"}}\n  {{> a}}{{/inline}}{{> a}}",
                (3, 7),
                "inline a → inline b → inline a",
            ),
            // Defined inside another inline partial.
            (
                "{{#*inline \"a\"}}{{#*inline \"b\"}}{{> a}}{{/inline}}{{> b}}{{/inline}}{{> a}}",
                (1, 37),
                "inline a → inline b → inline a",
            ),
            // Inside blocks, behind a condition.
            (
                "{{#each items}}\n{{#*inline \"row\"}}{{#if this}}{{> row}}{{/if}}{{/inline}}{{> row}}\n{{/each}}",
                (2, 35),
                "inline row → inline row",
            ),
            // Through three.
            (
                "{{#*inline \"a\"}}{{> b}}{{/inline}}{{#*inline \"b\"}}{{> c}}{{/inline}}{{#*inline \"c\"}}{{> a}}{{/inline}}",
                (1, 89),
                "inline a → inline b → inline c → inline a",
            ),
        ];
        for (source, (line, column), cycle) in cases {
            match add_err(&mut set(), source) {
                Error::PartialCycle { template, line: l, column: c, cycle: found } => {
                    assert_eq!(
                        (template.as_str(), l, c, found.as_str()),
                        ("t/chat/en", line, column, cycle),
                        "{source:?}"
                    )
                }
                other => panic!("{source:?}: {other}"),
            }
        }
        let e = add_err(&mut set(), "{{#*inline \"a\"}}{{> a}}{{/inline}}{{> a}}");
        assert_eq!(
            e.to_string(),
            "t/chat/en: line 1, column 21: partials would include each other in a cycle (inline a → inline a); \
             remove one of the includes"
        );
        assert_eq!(e.position(), Some((1, 21)));

        // Inline partials that include each other without a cycle still work.
        let mut ok = set();
        add(
            &mut ok,
            "t",
            "chat",
            "en",
            "{{#*inline \"a\"}}x{{/inline}}{{#*inline \"b\"}}{{> a}}{{> a}}{{/inline}}{{> b}}{{> a}}",
        );
        assert_eq!(render(&ok, "t", "chat", "en", &json!({})).text, "xxx");

        // An inline partial of a partial that includes that partial is a cycle of partials.
        let mut set = set();
        let e = set
            .add_partial("p", "en", PartialSource::text("{{#*inline \"a\"}}{{> p}}{{/inline}}{{> a}}"))
            .expect_err("p includes itself through its inline partial");
        assert_eq!(
            (e.to_string().as_str(), e.position()),
            (
                "partial p/en: line 1, column 21: partials would include each other in a cycle (p/en → p/en); \
                 remove one of the includes",
                Some((1, 21))
            )
        );
        // ... also through another partial, added later (inline ↔ file partials).
        set.add_partial("p", "en", PartialSource::text("{{#*inline \"a\"}}{{> q}}{{/inline}}{{> a}}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = set.add_partial("q", "en", PartialSource::text("q {{> p}}")).expect_err("p → q → p");
        match e {
            Error::PartialCycle { template, line, column, cycle } => {
                assert_eq!(
                    (template.as_str(), line, column, cycle.as_str()),
                    ("partial q/en", 1, 7, "p/en → q/en → p/en")
                )
            }
            other => panic!("{other}"),
        }

        // Inline names are partial names written in quotes: a name like `q@en` or one computed
        // from the data could stand for another partial at render time.
        for (source, needle) in [
            ("{{#*inline \"q@en\"}}x{{/inline}}{{> q}}", "`q@en` is not an inline partial name"),
            ("{{#*inline customer.name}}x{{/inline}}", "needs its name in quotes"),
        ] {
            let e = add_err(&mut set, source);
            assert!(matches!(e, Error::Unsupported { line: 1, column: 5, .. }), "{source}: {e:?}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    /// Issue #11: blocks or subexpressions nested thousands deep overflowed the parser's stack.
    #[test]
    fn sources_nesting_too_deep_are_refused_before_parsing() {
        let deep_blocks = format!("x\n{}y{}", "{{#if a}}".repeat(33), "{{/if}}".repeat(33));
        match add_err(&mut set(), &deep_blocks) {
            Error::Unsupported { line, column, message, .. } => {
                assert_eq!((line, column), (2, 32 * 9 + 1));
                assert!(message.starts_with("blocks nest deeper than 32 levels"), "{message}");
            }
            other => panic!("{other}"),
        }
        let deep_parens = format!("{{{{upper {}x{}}}}}", "(upper ".repeat(33), ")".repeat(33));
        match add_err(&mut set(), &deep_parens) {
            Error::Unsupported { line, column, message, .. } => {
                assert_eq!((line, column), (1, 9 + 32 * 7));
                assert!(message.starts_with("subexpressions nest deeper than 32 levels"), "{message}");
            }
            other => panic!("{other}"),
        }
        // Thousands of levels are refused the same way, without touching the parser.
        let bomb = format!("{{{{upper {}x}}}}", "(upper ".repeat(9000));
        assert!(matches!(add_err(&mut set(), &bomb), Error::Unsupported { .. }));
        // 32 levels, parentheses in strings and comments do not count.
        let mut set = set();
        let fine = format!(
            "{{{{!-- {{{{#if}}}} ( --}}}}{}{{{{upper \"((((\"}}}}{}",
            "{{#if a}}".repeat(32),
            "{{/if}}".repeat(32)
        );
        add(&mut set, "t", "chat", "en", &fine);
        add(&mut set, "u", "chat", "en", &format!("{{{{upper {}\"x\"{}}}}}", "(upper ".repeat(32), ")".repeat(32)));
        assert_eq!(render(&set, "u", "chat", "en", &json!({})).text, "X");
    }

    /// The nested-each bomb of issue #11: eight items, nine levels, 134 million loop bodies
    /// froze the server for 80 s. Every render now has a budget of steps, depth and time.
    #[test]
    fn renders_stop_at_their_step_depth_and_time_limits() {
        let bomb = format!("{}{}", "{{#each @root.a}}".repeat(9), "{{/each}}".repeat(9));
        let data = json!({ "a": [1, 2, 3, 4, 5, 6, 7, 8] });
        let mut set = set();
        add(&mut set, "bomb", "chat", "en", &bomb);
        match set.render("bomb", "chat", "en", &data) {
            Err(Error::TooManySteps { template, line, column, limit }) => {
                assert_eq!((template.as_str(), limit), ("bomb/chat/en", 100_000));
                assert_eq!(line, Some(1), "the block being entered");
                assert!(column.is_some_and(|c| c > 1), "{column:?}");
            }
            other => panic!("{other:?}"),
        }
        let e = set.preview("bomb", "chat", "en", &data).expect_err("the same in a preview");
        assert!(
            e.to_string()
                .contains("rendering takes more than 100000 steps (each loop iteration, block and partial is one)"),
            "{e}"
        );

        // The time limit, in loops and in script helpers that would run on.
        let limits =
            Limits { max_steps: u64::MAX, max_render_ms: 50, script_operations: u64::MAX, ..Limits::default() };
        let mut slow = TemplateSet::with_limits("en", limits).unwrap_or_else(|e| panic!("{e}"));
        slow.register_script_helper("spin", "let n = 0; loop { n += 1; }").unwrap_or_else(|e| panic!("{e}"));
        add(&mut slow, "bomb", "chat", "en", &bomb);
        add(&mut slow, "spin", "chat", "en", "a\n{{spin}}");
        let e = slow.render("bomb", "chat", "en", &data).expect_err("too slow");
        assert!(matches!(e, Error::TooSlow { limit_ms: 50, .. }), "{e:?}");
        match slow.render("spin", "chat", "en", &data) {
            Err(Error::TooSlow { template, line, column, limit_ms }) => {
                assert_eq!((template.as_str(), line, column, limit_ms), ("spin/chat/en", Some(2), Some(1), 50))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            slow.render("spin", "chat", "en", &data).map_err(|e| e.to_string()).err().as_deref(),
            Some(
                "spin/chat/en: line 2, column 1: rendering takes longer than 50 ms; loop over shorter lists or make \
                 the script helpers cheaper"
            )
        );

        // Depth: blocks and partials entered while rendering.
        let limits = Limits { max_depth: 5, ..Limits::default() };
        let mut shallow = TemplateSet::with_limits("en", limits).unwrap_or_else(|e| panic!("{e}"));
        shallow
            .add_partial("p", "en", PartialSource::text("{{#if @root.x}}{{#if @root.x}}deep{{/if}}{{/if}}"))
            .unwrap_or_else(|e| panic!("{e}"));
        add(&mut shallow, "ok", "chat", "en", "{{#if x}}{{> p}}{{/if}}");
        add(&mut shallow, "deep", "chat", "en", "{{#each items}}{{#if @root.x}}{{> p}}{{/if}}{{/each}}");
        let data = json!({ "x": true, "items": [1] });
        assert_eq!(render(&shallow, "ok", "chat", "en", &data).text, "deep");
        match shallow.render("deep", "chat", "en", &data) {
            Err(Error::TooDeep { template, line, column, limit }) => {
                assert_eq!((template.as_str(), line, column, limit), ("partial p/en", Some(1), Some(16), 5))
            }
            other => panic!("{other:?}"),
        }

        // A budget ends with its render: the next render starts afresh.
        let mut set = set;
        add(&mut set, "small", "chat", "en", "{{#each @root.a}}{{this}}{{/each}}");
        assert_eq!(render(&set, "small", "chat", "en", &data).text, "");
        assert_eq!(render(&set, "small", "chat", "en", &json!({ "a": [1, 2] })).text, "12");
    }

    /// The depth limit must stop a render long before the stack ends: a render as deep as the
    /// limit allows, through partials, loops and conditions, fits into 1 MiB of stack (tokio's
    /// blocking threads have 2 MiB). If it did not, this test would abort rather than fail.
    #[test]
    fn the_deepest_render_fits_a_small_stack() {
        let mut set = set();
        for i in 0..40 {
            let body = format!(
                "{{{{#each @root.one}}}}{{{{#with @root.obj}}}}{{{{#if @root.x}}}}{{{{> p{}}}}}{{{{/if}}}}{{{{/with}}}}{{{{/each}}}}",
                i + 1
            );
            set.add_partial(&format!("p{i}"), "en", PartialSource::text(&body)).unwrap_or_else(|e| panic!("{e}"));
        }
        set.add_partial("p40", "en", PartialSource::text("bottom")).unwrap_or_else(|e| panic!("{e}"));
        add(&mut set, "t", "chat", "en", "{{> p0}}");
        let data = json!({ "one": [1], "obj": { "k": 1 }, "x": true });
        let thread = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || set.render("t", "chat", "en", &data).map(|r| r.text))
            .unwrap_or_else(|e| panic!("{e}"));
        match thread.join() {
            Ok(Err(Error::TooDeep { limit: 64, .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_set_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<TemplateSet>();
    }
}
