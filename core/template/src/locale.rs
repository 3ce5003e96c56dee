//! The languages the helpers format for: month names, number separators, polite fallbacks.
//! German and English are written out; every other language formats the English way.

/// How the language-aware helpers (`date`, `money`, `customer_name`) write for one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locale {
    De,
    En,
}

const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl Locale {
    /// The locale for a primary language tag (`de`, `en`, …).
    pub(crate) fn of(language: &str) -> Locale {
        match language {
            "de" => Locale::De,
            _ => Locale::En,
        }
    }

    /// The month's full name; `month` is 1–12.
    pub(crate) fn month(self, month: u32) -> &'static str {
        let names = match self {
            Locale::De => &MONTHS_DE,
            Locale::En => &MONTHS_EN,
        };
        names[(month.clamp(1, 12) - 1) as usize]
    }

    /// What `customer_name` writes when the customer has no name: a neutral noun that still
    /// reads well in "Kunde: …" or "Dear …".
    pub(crate) fn customer_fallback(self) -> &'static str {
        match self {
            Locale::De => "Kundin/Kunde",
            Locale::En => "customer",
        }
    }
}
