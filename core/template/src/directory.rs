//! Loading a set from a directory of files named after what they are:
//!
//! ```text
//! {purpose}.{channel}.{language}.hbs        text body; an optional first line `Subject: …`
//! {purpose}.{channel}.{language}.html.hbs   HTML body of the same variant (email)
//! partials/{name}.{language}.hbs            partial, used in text and (without .html.hbs) HTML
//! partials/{name}.{language}.html.hbs       partial, used in HTML bodies
//! helpers/{name}.rhai                       script helper
//! ```
//!
//! Other files (a README, sample data) are ignored. Errors name the file, line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::set::{DEFAULT_LANGUAGE, Labels, PartialSource, TemplateSource};
use crate::{Error, TemplateSet};

const SUBJECT: &str = "Subject:";

/// The sources of one variant or partial: (text file, HTML file), each (label, contents).
type Pair = (Option<(String, String)>, Option<(String, String)>);

impl TemplateSet {
    /// A set with default language `en` and default limits, loaded from `dir` (see the
    /// module's naming scheme). Script helpers are registered first, then partials, then
    /// templates, and finally every include is checked.
    ///
    /// # Errors
    /// Any error of [`TemplateSet::add_template`], [`TemplateSet::add_partial`] or
    /// [`TemplateSet::register_script_helper`], naming the file; [`Error::File`] for a
    /// misnamed file; [`Error::Io`] for one that cannot be read.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<TemplateSet, Error> {
        let mut set = TemplateSet::new(DEFAULT_LANGUAGE)?;
        set.add_dir(dir)?;
        Ok(set)
    }

    /// Adds the files of `dir` to this set, as [`TemplateSet::load_dir`] does.
    ///
    /// # Errors
    /// As [`TemplateSet::load_dir`]. Files read before the failing one stay in the set; load
    /// into a fresh set when you need all or nothing.
    pub fn add_dir(&mut self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        let mut sources = Vec::new();
        for (folder, extension) in [("helpers", "rhai"), ("partials", "hbs"), ("", "hbs")] {
            for (stem, path) in files(&dir.join(folder), extension)? {
                let name = if folder.is_empty() {
                    format!("{stem}.{extension}")
                } else {
                    format!("{folder}/{stem}.{extension}")
                };
                sources.push((name, self.read(&path)?));
            }
        }
        self.add_files(sources.iter().map(|(n, s)| (n.as_str(), s.as_str()))).map_err(|e| match e {
            Error::File { path, message } => Error::File { path: dir.join(path), message },
            other => other,
        })
    }

    /// Adds files held in memory (a set compiled into a program), named by their path in the
    /// directory layout of [`TemplateSet::load_dir`] (`acknowledgement.email.de.hbs`,
    /// `partials/greeting.de.hbs`, `helpers/stars.rhai`); other names are ignored.
    ///
    /// # Errors
    /// As [`TemplateSet::load_dir`]; [`Error::File`] names the file by that path.
    pub fn add_files<'a>(&mut self, files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), Error> {
        let mut helpers = Vec::new();
        let mut partials = Vec::new();
        let mut templates = Vec::new();
        for (name, source) in files {
            if name.starts_with('.') || name.contains("/.") {
                continue;
            }
            if let Some(stem) = name.strip_prefix("helpers/").and_then(|n| n.strip_suffix(".rhai")) {
                helpers.push((stem, source));
            } else if let Some(stem) = name.strip_prefix("partials/").and_then(|n| n.strip_suffix(".hbs")) {
                partials.push((stem, name, source));
            } else if let Some(stem) = name.strip_suffix(".hbs").filter(|n| !n.contains('/')) {
                templates.push((stem, name, source));
            }
        }
        helpers.sort();
        for (name, source) in helpers {
            self.check_file_size(name, source.len())?;
            self.register_script_helper(name, source).map_err(|e| match e {
                Error::ScriptSyntax { line, column, message, .. } => {
                    Error::Syntax { template: format!("helpers/{name}.rhai"), line, column, message }
                }
                other => other,
            })?;
        }
        for ([name, language], (text, html)) in self.pairs::<2>(partials, "partials/")? {
            let source = PartialSource {
                text: text.as_ref().map(|(_, s)| s.as_str()),
                html: html.as_ref().map(|(_, s)| s.as_str()),
            };
            let label = |file: &Option<(String, String)>| file.as_ref().map(|(l, _)| l.clone()).unwrap_or_default();
            self.add_partial_labeled(&name, &language, source, (label(&html), label(&text)))?;
        }
        for ([purpose, channel, language], (text, html)) in self.pairs::<3>(templates, "")? {
            let Some((text_label, text)) = text else {
                let (label, _) = html.unwrap_or_default();
                return Err(Error::File {
                    path: PathBuf::from(&label),
                    message: format!(
                        "an HTML body needs its text body beside it; add {}",
                        label.replace(".html.hbs", ".hbs")
                    ),
                });
            };
            let (subject, body) = split_subject(&text);
            let html_label = html.as_ref().map_or_else(String::new, |(l, _)| l.clone());
            let source = TemplateSource {
                subject: subject.as_deref(),
                text: &body,
                html: html.as_ref().map(|(_, s)| s.as_str()),
            };
            let labels = Labels { subject: text_label.clone(), text: text_label, html: html_label };
            self.add_template_labeled(&purpose, &channel, &language, source, labels)?;
        }
        self.check()
    }

    /// Files (stem, label, contents) grouped by the `N` dot-separated fields of their stems,
    /// each with its text and HTML file; labels are `prefix` + file name.
    fn pairs<const N: usize>(
        &self,
        files: Vec<(&str, &str, &str)>,
        prefix: &str,
    ) -> Result<BTreeMap<[String; N], Pair>, Error> {
        let mut pairs: BTreeMap<[String; N], Pair> = BTreeMap::new();
        for (stem, path, contents) in files {
            self.check_file_size(path, contents.len())?;
            let (stem, html) = match stem.strip_suffix(".html") {
                Some(stem) => (stem, true),
                None => (stem, false),
            };
            let fields: Vec<String> = stem.split('.').map(str::to_owned).collect();
            let Ok(key) = <[String; N]>::try_from(fields) else {
                let expected = if N == 3 {
                    "name it {purpose}.{channel}.{language}.hbs, or .html.hbs for the HTML body"
                } else {
                    "name it {partial}.{language}.hbs, or .html.hbs for the HTML version"
                };
                return Err(Error::File { path: PathBuf::from(path), message: expected.to_owned() });
            };
            let label = format!("{prefix}{}", path.rsplit('/').next().unwrap_or(path));
            let entry = pairs.entry(key).or_default();
            let slot = if html { &mut entry.1 } else { &mut entry.0 };
            *slot = Some((label, contents.to_owned()));
        }
        Ok(pairs)
    }

    /// A text file holds a subject and a body, each up to the source limit.
    fn check_file_size(&self, what: &str, size: usize) -> Result<(), Error> {
        let limit = 2 * self.limits().max_source_bytes;
        if size > limit {
            return Err(Error::SourceTooLarge { what: what.to_owned(), size, limit });
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> Result<String, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        self.check_file_size(&path.display().to_string(), usize::try_from(size).unwrap_or(usize::MAX))?;
        std::fs::read_to_string(path).map_err(io)
    }
}

/// The files of `dir` ending in `.{extension}`, sorted, as (name without the extension, path).
/// A missing directory has no files.
fn files(dir: &Path, extension: &str) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path: dir.to_owned(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: dir.to_owned(), source })?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{extension}"))
            && !name.starts_with('.')
            && path.is_file()
        {
            files.push((stem.to_owned(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}

/// Splits a `Subject: …` first line off a text file. Both keep their place in the file — the
/// subject's prefix becomes spaces, the body starts with the emptied first line — so errors
/// point at the file's own lines and columns. (The rendered subject is trimmed and the body's
/// leading newlines dropped.)
fn split_subject(text: &str) -> (Option<String>, String) {
    let Some(rest) = text.strip_prefix(SUBJECT) else { return (None, text.to_owned()) };
    let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let subject = format!("{}{}", " ".repeat(SUBJECT.len()), line.trim_end_matches('\r'));
    (Some(subject), format!("\n{body}"))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use serde_json::Value as Json;

    use super::*;
    use crate::sms;

    const PURPOSES: [&str; 7] = [
        "acknowledgement",
        "follow_up",
        "escalation_notice",
        "survey_invitation",
        "resolution",
        "lost_parcel",
        "return_request",
    ];

    fn library() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates")
    }

    fn fixture(name: &str) -> Json {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, files: &[(&str, &str)]) -> Scratch {
            let dir = std::env::temp_dir().join(format!("plugdesk-template-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (path, contents) in files {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap_or(&dir)).unwrap_or_else(|e| panic!("{e}"));
                std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
            }
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every purpose renders in both languages on every channel, with full and with minimal
    /// data, without a fallback; SMS fit one message. All renders of the full data are kept in
    /// `tests/fixtures/default-library.txt` for review; `UPDATE_EXPECT=1` rewrites it.
    #[test]
    fn the_default_library_renders_everywhere() {
        let set = TemplateSet::load_dir(library()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.variants().count(), PURPOSES.len() * 2 * 3);
        let mut snapshot = String::new();
        for (data_name, data) in [("sample.json", fixture("sample.json")), ("minimal.json", fixture("minimal.json"))] {
            for purpose in PURPOSES {
                for language in ["de", "en"] {
                    for channel in ["email", "chat", "sms"] {
                        let at = format!("{purpose}.{channel}.{language} with {data_name}");
                        let variant = set.select(purpose, channel, language).unwrap_or_else(|| panic!("{at}: missing"));
                        assert_eq!((variant.channel(), variant.language()), (channel, language), "{at}");
                        let out =
                            set.preview(purpose, channel, language, &data).unwrap_or_else(|e| panic!("{at}: {e}"));
                        let all = format!("{:?}{}{:?}", out.subject, out.text, out.html);
                        assert!(!all.contains("{{") && !out.text.is_empty(), "{at}: {all}");
                        assert_eq!(out.subject.is_some(), channel == "email", "{at}");
                        assert_eq!(out.html.is_some(), channel == "email", "{at}");
                        if channel == "sms" {
                            let length = sms::length(&out.text);
                            assert!(length.encoding == "GSM" && length.units <= 160, "{at}: {length:?}");
                        }
                        if data_name == "sample.json" {
                            let _ = writeln!(snapshot, "===== {purpose}.{channel}.{language}");
                            if let Some(subject) = &out.subject {
                                let _ = writeln!(snapshot, "Subject: {subject}\n");
                            }
                            let _ = writeln!(snapshot, "{}", out.text);
                            if let Some(html) = &out.html {
                                let _ = writeln!(snapshot, "----- html\n{html}");
                            }
                        }
                    }
                }
            }
        }
        let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default-library.txt");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&expected_path, &snapshot).unwrap_or_else(|e| panic!("{e}"));
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert!(expected == snapshot, "the default library renders differently; review and run with UPDATE_EXPECT=1");
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("ack.email.de.hbs", "Subject: Hallo\n\nText {{frob x}}\n")],
                "ack.email.de.hbs: line 3, column 8: unknown helper `frob`",
            ),
            (
                &[("ack.email.de.hbs", "Subject: Hallo {{frob x}}\nText\n")],
                "ack.email.de.hbs: line 1, column 18: unknown helper `frob`",
            ),
            (
                &[("ack.email.de.hbs", "Text\n"), ("ack.email.de.html.hbs", "<p>\n{{#if x}}</p>\n")],
                "ack.email.de.html.hbs: line 2, column 1: `{{#if}}` is never closed",
            ),
            (
                &[("partials/sig.de.hbs", "{{> nothere}}"), ("ack.chat.de.hbs", "x")],
                "partials/sig.de.hbs: line 1, column 5: partial `nothere` exists neither",
            ),
            (&[("ack.de.hbs", "x")], "ack.de.hbs: name it {purpose}.{channel}.{language}.hbs"),
            (&[("helpers/shout.rhai", "let = 1;")], "helpers/shout.rhai: line 1, column 5: "),
        ];
        for (i, (files, expected)) in cases.into_iter().enumerate() {
            let scratch = Scratch::new(&format!("error-{i}"), files);
            let e = TemplateSet::load_dir(&scratch.0).expect_err(expected).to_string();
            let e = e.replace(&format!("{}/", scratch.0.display()), "");
            assert!(e.starts_with(expected), "{e}");
        }
    }

    #[test]
    fn a_directory_brings_helpers_partials_and_subjects() {
        let scratch = Scratch::new(
            "full",
            &[
                ("README.md", "ignored"),
                ("helpers/shout.rhai", "params[0].to_upper() + \"!\""),
                ("partials/hi.de.hbs", "Hallo {{name}}"),
                ("partials/hi.de.html.hbs", "<b>Hallo {{name}}</b>"),
                ("ack.email.de.hbs", "Subject: {{shout name}}\n{{> hi}}"),
                ("ack.email.de.html.hbs", "{{> hi}}"),
            ],
        );
        let set = TemplateSet::load_dir(&scratch.0).unwrap_or_else(|e| panic!("{e}"));
        let out =
            set.render("ack", "email", "de", &serde_json::json!({"name": "Ana"})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject.as_deref(), Some("ANA!"));
        assert_eq!(out.text, "Hallo Ana");
        assert_eq!(out.html.as_deref(), Some("<b>Hallo Ana</b>"));
    }

    #[test]
    fn subject_lines_keep_their_place() {
        let (subject, body) = split_subject("Subject: Re: {{ticket.subject}}\r\nHello\n");
        assert_eq!(subject.as_deref(), Some("         Re: {{ticket.subject}}"));
        assert_eq!(body, "\nHello\n");
        assert_eq!(split_subject("Hello"), (None, "Hello".to_owned()));
    }
}
