//! The UI's languages and their message catalogues (`i18n/en.toml`, `i18n/de.toml`, compiled
//! into the binary). Every text a page shows comes from here; a test checks that both
//! catalogues have the same keys and that every key the code names exists.

use std::collections::HashMap;
use std::sync::LazyLock;

/// A language the UI speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    En,
    De,
}

static EN: LazyLock<HashMap<String, String>> = LazyLock::new(|| load(include_str!("../i18n/en.toml")));
static DE: LazyLock<HashMap<String, String>> = LazyLock::new(|| load(include_str!("../i18n/de.toml")));

fn load(source: &str) -> HashMap<String, String> {
    // The catalogues are ours and checked by the tests below; a broken one shows keys, not a crash.
    toml::from_str(source).unwrap_or_default()
}

impl Lang {
    /// Both languages, in the order the switch lists them.
    pub(crate) const ALL: [Lang; 2] = [Lang::De, Lang::En];

    /// The code (`html lang`, cookie, agent setting).
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// Parses a code.
    pub(crate) fn parse(s: &str) -> Option<Lang> {
        match s {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    /// The first of German or English the browser asks for, by `q` weight; English otherwise.
    pub(crate) fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut it = part.trim().split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.parse::<f32>().ok())).unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            if let Some(lang) = Lang::parse(primary)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    /// The catalogue text of `key` (the key itself if missing, which the tests rule out).
    pub(crate) fn t(self, key: &str) -> &str {
        let map = match self {
            Lang::En => &*EN,
            Lang::De => &*DE,
        };
        map.get(key).map(String::as_str).unwrap_or_else(|| {
            tracing::warn!(key, lang = self.code(), "missing catalogue text");
            "…"
        })
    }

    /// `t(key)` with `{name}` placeholders filled.
    pub(crate) fn f(self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self.t(key).to_owned();
        for (k, v) in args {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    /// Texts the scripts need, as a JSON object for the page's `pd-i18n` data block.
    pub(crate) fn script_texts(self) -> String {
        let keys = [
            "presence_viewing",
            "presence_replying",
            "draft_saved",
            "draft_failed",
            "module_none",
            "module_failed",
            "sms_count",
            "new_tickets",
            "send_undo",
            "undo",
            "sending",
            "offline",
            "signed_out",
            "file_too_large",
        ];
        let map: serde_json::Map<String, serde_json::Value> =
            keys.iter().map(|k| ((*k).to_owned(), serde_json::Value::from(self.t(k)))).collect();
        serde_json::Value::Object(map).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_have_the_same_keys_and_no_empty_text() {
        let en: HashMap<String, String> = toml::from_str(include_str!("../i18n/en.toml")).expect("en.toml parses");
        let de: HashMap<String, String> = toml::from_str(include_str!("../i18n/de.toml")).expect("de.toml parses");
        let missing_de: Vec<_> = en.keys().filter(|k| !de.contains_key(*k)).collect();
        let missing_en: Vec<_> = de.keys().filter(|k| !en.contains_key(*k)).collect();
        assert!(missing_de.is_empty(), "missing in de.toml: {missing_de:?}");
        assert!(missing_en.is_empty(), "missing in en.toml: {missing_en:?}");
        assert!(en.values().chain(de.values()).all(|v| !v.trim().is_empty()));
    }

    #[test]
    fn every_key_the_code_names_exists() {
        let en: HashMap<String, String> = toml::from_str(include_str!("../i18n/en.toml")).expect("en.toml parses");
        let sources = [
            include_str!("page.rs"),
            include_str!("signin.rs"),
            include_str!("inbox.rs"),
            include_str!("ticket.rs"),
            include_str!("settings.rs"),
            include_str!("error.rs"),
            include_str!("live.rs"),
            include_str!("customer.rs"),
        ];
        let mut missing = Vec::new();
        for src in sources {
            for marker in [".t(\"", ".f(\"", "key: \"", "tk(\""] {
                for piece in src.split(marker).skip(1) {
                    let key = piece.split('"').next().unwrap_or("");
                    if !key.is_empty() && !en.contains_key(key) {
                        missing.push(key.to_owned());
                    }
                }
            }
        }
        // Keys built from data (statuses, views, …) are checked where they are built.
        for view in plugdesk_core::inbox::View::ALL {
            for prefix in ["view_", "view_empty_"] {
                let k = format!("{prefix}{}", view.as_str());
                if !en.contains_key(&k) {
                    missing.push(k);
                }
            }
        }
        for s in ["new", "open", "pending", "resolved", "closed"] {
            if !en.contains_key(&format!("status_{s}")) {
                missing.push(format!("status_{s}"));
            }
        }
        for p in ["low", "normal", "high", "urgent"] {
            if !en.contains_key(&format!("priority_{p}")) {
                missing.push(format!("priority_{p}"));
            }
        }
        assert!(missing.is_empty(), "keys named in the code but missing in en.toml: {missing:?}");
        let scripts: serde_json::Value = serde_json::from_str(&Lang::De.script_texts()).expect("json");
        assert!(scripts.as_object().expect("object").values().all(|v| v != "…"));
    }

    #[test]
    fn accept_language_picks_by_weight() {
        assert_eq!(Lang::from_accept_language("de-DE,de;q=0.9,en;q=0.8"), Lang::De);
        assert_eq!(Lang::from_accept_language("fr-FR,en;q=0.5,de;q=0.7"), Lang::De);
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }
}
