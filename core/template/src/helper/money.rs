//! `{{money 12.5 "EUR"}}`: an amount in a currency, written the way the template's language
//! writes money: `12,50 €` in German, `€12.50` in English.

use handlebars::{Context, Helper, RenderError};
use serde_json::Value as Json;

use super::{arg, fail};
use crate::locale::Locale;

/// Amounts beyond this lose cents in an `f64`; no customer letter needs them.
const MAX_AMOUNT: f64 = 1e13;

pub(super) fn helper(h: &Helper<'_>, _: &Context, locale: Locale) -> Result<Json, RenderError> {
    let amount = match arg(h, 0) {
        Json::Null => return Ok(Json::String(String::new())),
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|a| a.is_finite() && a.abs() < MAX_AMOUNT)
    .ok_or_else(|| fail("money", format!("expects an amount like 12.5, got {}", arg(h, 0))))?;
    let currency = match arg(h, 1) {
        Json::String(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => s.to_ascii_uppercase(),
        _ => return Err(fail("money", "needs a currency code after the amount: {{money 12.5 \"EUR\"}}")),
    };
    Ok(Json::String(format_money(amount, &currency, locale)))
}

fn format_money(amount: f64, currency: &str, locale: Locale) -> String {
    // ISO 4217 currencies without minor units that customers are likely to pay in.
    let decimals = if matches!(currency, "JPY" | "KRW" | "ISK" | "CLP" | "VND") { 0 } else { 2 };
    let scale = 10_u64.pow(decimals);
    let units = (amount.abs() * scale as f64).round() as u64;
    let (whole, fraction) = (units / scale, units % scale);
    let (group, point) = match locale {
        Locale::De => ('.', ','),
        Locale::En => (',', '.'),
    };
    let digits = whole.to_string();
    let mut number = String::with_capacity(digits.len() + 8);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            number.push(group);
        }
        number.push(c);
    }
    if decimals > 0 {
        number.push(point);
        number.push_str(&format!("{fraction:0width$}", width = decimals as usize));
    }
    let sign = if amount < 0.0 && units > 0 { "-" } else { "" };
    let symbol = match currency {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    };
    match (locale, symbol) {
        (Locale::De, Some(symbol)) => format!("{sign}{number} {symbol}"),
        (Locale::De, None) => format!("{sign}{number} {currency}"),
        (Locale::En, Some(symbol)) => format!("{sign}{symbol}{number}"),
        (Locale::En, None) => format!("{sign}{currency} {number}"),
    }
}
