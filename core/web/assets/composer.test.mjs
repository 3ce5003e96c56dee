// Unit tests of the SMS length rules in composer.js: `node --test core/web/assets/`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { smsCount } from "./composer.js";

function check(text, chars, parts, encoding) {
  assert.deepEqual(smsCount(text), { chars, parts, encoding }, JSON.stringify(text));
}

test("empty text is no sms", () => check("", 0, 0, "gsm7"));

test("gsm-7 fits 160 septets in one sms, then 153 per part", () => {
  check("a".repeat(160), 160, 1, "gsm7");
  check("a".repeat(161), 161, 2, "gsm7");
  check("a".repeat(306), 306, 2, "gsm7");
  check("a".repeat(307), 307, 3, "gsm7");
});

test("german umlauts and newlines stay gsm-7", () => check("Grüße\nÄÖÜ ß @£$", 15, 1, "gsm7"));

test("extension characters count two septets", () => {
  check("€", 2, 1, "gsm7");
  check("[x]{y}", 10, 1, "gsm7");
  check("€".repeat(80), 160, 1, "gsm7");
  check("€".repeat(80) + "a", 161, 2, "gsm7");
});

test("one non-gsm character switches to ucs-2: 70, then 67 per part", () => {
  check("ç", 1, 1, "ucs2"); // only capital Ç is in the alphabet
  check("a".repeat(69) + "ł", 70, 1, "ucs2");
  check("a".repeat(70) + "ł", 71, 2, "ucs2");
  check("ł".repeat(134), 134, 2, "ucs2");
  check("ł".repeat(135), 135, 3, "ucs2");
});

test("emoji count two ucs-2 code units", () => check("ok 👍", 5, 1, "ucs2"));

test("typographic quotes and dashes are not gsm-7", () => {
  check("„Hallo“", 7, 1, "ucs2");
  check("a – b", 5, 1, "ucs2");
});
