//! The reply log: agents' replies wait in the instance's key-value store until the widget
//! fetches them. Sessions share 1000 buckets because the store holds at most 1024 keys and
//! cannot delete one; the crate docs describe the layout and what is evicted when.

use std::collections::BTreeMap;

use plugdesk_sdk::{SendError, host};
use serde::{Deserialize, Serialize};

/// Buckets, keys `r:0` to `r:999`; the store's other 24 keys stay free for later needs.
const BUCKETS: u64 = 1000;
/// Largest bucket value, in bytes: under the store's 64 KiB, so an estimate a few bytes off
/// cannot fail a write.
const MAX_VALUE: usize = 60 * 1024;
/// Replies kept per session: more than a chat scrolls back to.
const MAX_ITEMS: usize = 50;
/// A session without a reply for this long is dropped when its bucket is written.
const RETENTION_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// Writes of one reply before giving up to the outbox's retry (see [`append`]).
const WRITE_ATTEMPTS: usize = 3;

/// One agent reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    /// Position in the bucket's sequence: grows with every reply in the bucket.
    pub(crate) seq: u64,
    /// The host's message id, to recognise a retried send.
    pub(crate) id: String,
    pub(crate) text: String,
    /// When it was stored, ms since the epoch.
    pub(crate) at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    /// The last reply's time: the least recently answered session is evicted first.
    touched: i64,
    items: Vec<Item>,
}

/// One key's value: the logs of the sessions that hash to it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Bucket {
    /// The next sequence number. Per bucket rather than per session, so it survives a
    /// session's eviction and a returning widget's `after` never points past new replies.
    next: u64,
    sessions: BTreeMap<String, Log>,
}

/// The bucket of a session: FNV-1a of its id, stable across builds and platforms.
fn key(session: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in session.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("r:{}", h % BUCKETS)
}

fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX)
}

impl Bucket {
    /// Reads a stored value. One that does not parse (written by a future version, or
    /// damaged) starts over, with `next` at `now`: far above any count of replies, so
    /// sequence numbers still only grow.
    fn parse(value: Option<Vec<u8>>, now: i64) -> Bucket {
        let Some(value) = value else { return Bucket { next: 1, sessions: BTreeMap::new() } };
        serde_json::from_slice(&value).unwrap_or_else(|e| {
            host::warn(&format!("chat reply bucket does not parse, starting it over: {e}"));
            Bucket { next: u64::try_from(now).unwrap_or(1).max(1), sessions: BTreeMap::new() }
        })
    }

    fn find(&self, session: &str, id: &str) -> Option<u64> {
        self.sessions.get(session)?.items.iter().find(|i| i.id == id).map(|i| i.seq)
    }

    fn after(&self, session: &str, after: u64) -> Vec<Item> {
        let items = self.sessions.get(session).map(|log| log.items.as_slice()).unwrap_or_default();
        items.iter().filter(|i| i.seq > after).cloned().collect()
    }

    fn push(&mut self, session: &str, id: &str, text: &str, now: i64) -> u64 {
        let seq = self.next.max(1);
        self.next = seq + 1;
        let log = self.sessions.entry(session.to_string()).or_default();
        log.touched = now;
        log.items.push(Item { seq, id: id.into(), text: text.into(), at: now });
        seq
    }

    /// Makes the bucket fit [`MAX_VALUE`] after a reply was pushed to `session`: its newest
    /// [`MAX_ITEMS`] replies stay, as many as fit; other sessions stay newest first while
    /// they fit and were answered within [`RETENTION_MS`].
    ///
    /// Sizes are added up per session (and per reply of `session`) instead of serialising
    /// the whole bucket after each drop, which could cost megabytes of work in one call.
    fn fit(&mut self, session: &str, now: i64) -> Result<(), SendError> {
        let mut budget = MAX_VALUE.saturating_sub(json_len(&Bucket { next: self.next, sessions: BTreeMap::new() }));
        let Some(log) = self.sessions.get_mut(session) else { return Ok(()) };
        if log.items.len() > MAX_ITEMS {
            log.items.drain(..log.items.len() - MAX_ITEMS);
        }
        // `"key":{"touched":T,"items":[a,b]},` is the key, a colon, the empty log, each item
        // and a comma per item and after the entry.
        let entry_len =
            |key: &str, log: &Log| json_len(key) + 1 + json_len(&Log { touched: log.touched, items: vec![] }) + 1;
        let mut sizes: Vec<usize> = log.items.iter().map(|i| json_len(i) + 1).collect();
        let mut total = entry_len(session, log) + sizes.iter().sum::<usize>();
        let mut dropped = 0;
        while total > budget && dropped + 1 < sizes.len() {
            total -= sizes[dropped];
            dropped += 1;
        }
        if total > budget {
            return Err(SendError::Permanent("the reply is too long for the chat: shorten it or split it".into()));
        }
        log.items.drain(..dropped);
        sizes.clear();
        budget -= total;

        let mut others: Vec<(i64, String)> =
            self.sessions.iter().filter(|(k, _)| k.as_str() != session).map(|(k, l)| (l.touched, k.clone())).collect();
        others.sort_by(|a, b| b.cmp(a));
        let mut full = false;
        for (touched, key) in others {
            let Some(log) = self.sessions.get(&key) else { continue };
            let len = entry_len(&key, log) + log.items.iter().map(|i| json_len(i) + 1).sum::<usize>();
            if full || now.saturating_sub(touched) > RETENTION_MS || len > budget {
                // Once one session does not fit, older ones go too: eviction stays in order of
                // last reply, and a small old session does not outlive a larger newer one.
                full |= len > budget;
                self.sessions.remove(&key);
            } else {
                budget -= len;
            }
        }
        Ok(())
    }
}

fn load(key: &str, now: i64) -> Result<Bucket, String> {
    host::kv_get(key).map(|value| Bucket::parse(value, now))
}

/// The replies to `session` with a sequence number above `after`, oldest first.
///
/// # Errors
/// The store's message when it cannot be read (the `kv` capability is not granted).
pub(crate) fn after(session: &str, after: u64) -> Result<Vec<Item>, String> {
    Ok(load(&key(session), host::now_ms())?.after(session, after))
}

/// Appends a reply to the session's log and returns its sequence number. A reply whose `id`
/// is already in the log is not appended again: its number is returned, so a retried send
/// delivers once.
///
/// The store has no compare-and-set, and the outbox sends several replies at once, so two
/// sends to one bucket (two quick replies in one chat) can each read the bucket before the
/// other writes it, and the later write would drop the earlier reply. Reading the bucket back
/// after writing catches the case where ours was dropped, and writes again; a reply of the
/// other send that wrote before us and already read back is the remaining (small) window.
///
/// # Errors
/// [`SendError::Retryable`] when the store fails or keeps losing the write;
/// [`SendError::Permanent`] when the reply alone does not fit a bucket.
pub(crate) fn append(session: &str, id: &str, text: &str, now: i64) -> Result<u64, SendError> {
    let key = key(session);
    let store = |e: String| SendError::Retryable(format!("the chat's key-value store failed (is kv granted?): {e}"));
    for _ in 0..WRITE_ATTEMPTS {
        let mut bucket = load(&key, now).map_err(store)?;
        if let Some(seq) = bucket.find(session, id) {
            return Ok(seq);
        }
        bucket.push(session, id, text, now);
        bucket.fit(session, now)?;
        let value = serde_json::to_vec(&bucket).map_err(|e| SendError::Retryable(e.to_string()))?;
        host::kv_set(&key, &value).map_err(store)?;
        if let Some(seq) = load(&key, now).map_err(store)?.find(session, id) {
            return Ok(seq);
        }
    }
    Err(SendError::Retryable(format!("replies to bucket {key} kept overwriting each other; the outbox will try again")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1000;

    fn size(bucket: &Bucket) -> usize {
        serde_json::to_vec(bucket).unwrap().len()
    }

    #[test]
    fn keys_spread_over_the_buckets_and_stay_put() {
        assert_eq!(key("0b5c1f3e-7d2a-4c4e-9a51-3f0f8d2b9e11"), key("0b5c1f3e-7d2a-4c4e-9a51-3f0f8d2b9e11"));
        let mut used = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let k = key(&format!("session-{i:08}"));
            assert!(k.len() <= 5, "{k}");
            used.insert(k);
        }
        assert!(used.len() > 800, "only {} buckets used by 2000 sessions", used.len());
    }

    #[test]
    fn sequence_numbers_grow_per_bucket_and_after_filters() {
        let mut b = Bucket::parse(None, 0);
        assert_eq!(b.push("aaaaaaaa", "m1", "one", 10), 1);
        assert_eq!(b.push("bbbbbbbb", "m2", "two", 11), 2);
        assert_eq!(b.push("aaaaaaaa", "m3", "three", 12), 3);
        let texts: Vec<String> = b.after("aaaaaaaa", 1).into_iter().map(|i| i.text).collect();
        assert_eq!(texts, ["three"]);
        assert_eq!(b.after("cccccccc", 0), vec![]);
        assert_eq!((b.find("aaaaaaaa", "m3"), b.find("aaaaaaaa", "m2")), (Some(3), None));
    }

    #[test]
    fn a_session_keeps_its_newest_50_replies() {
        let mut b = Bucket::default();
        for n in 0..60 {
            b.push("aaaaaaaa", &format!("m{n}"), "hi", n);
            b.fit("aaaaaaaa", n).unwrap();
        }
        let items = b.after("aaaaaaaa", 0);
        assert_eq!(items.len(), 50);
        assert_eq!(items[0].id, "m10");
    }

    #[test]
    fn large_replies_keep_the_bucket_under_60_kib() {
        let mut b = Bucket::default();
        let text = "\"quoted\"\n".repeat(1500); // 13.5 KB, more once escaped
        for n in 0..10 {
            b.push("aaaaaaaa", &format!("m{n}"), &text, n);
            b.fit("aaaaaaaa", n).unwrap();
            assert!(size(&b) <= MAX_VALUE, "{} bytes after {n}", size(&b));
        }
        let items = b.after("aaaaaaaa", 0);
        assert_eq!(items.last().unwrap().id, "m9");
        assert!(items.len() >= 3, "kept {}", items.len());
    }

    #[test]
    fn the_least_recently_answered_sessions_are_evicted_first() {
        let mut b = Bucket::default();
        let text = "x".repeat(11_000);
        for (n, s) in ["s0000000", "s1111111", "s2222222", "s3333333", "s4444444", "s5555555"].iter().enumerate() {
            b.push(s, "m", &text, n as i64);
            b.fit(s, n as i64).unwrap();
            assert!(size(&b) <= MAX_VALUE);
        }
        let kept: Vec<&str> = b.sessions.keys().map(String::as_str).collect();
        assert_eq!(kept, ["s1111111", "s2222222", "s3333333", "s4444444", "s5555555"]);
        // Replying in an old session makes it the newest.
        b.push("s1111111", "m2", &text, 10);
        b.fit("s1111111", 10).unwrap();
        assert!(!b.sessions.contains_key("s2222222") && b.sessions.contains_key("s1111111"));
    }

    #[test]
    fn sessions_quiet_for_30_days_are_dropped() {
        let mut b = Bucket::default();
        b.push("oldoldold", "m1", "hi", 0);
        b.push("newnewnew", "m2", "hi", 31 * DAY);
        b.fit("newnewnew", 31 * DAY).unwrap();
        assert!(!b.sessions.contains_key("oldoldold"));
        assert_eq!(b.next, 3, "the counter survives the eviction");
    }

    #[test]
    fn a_reply_too_large_for_a_bucket_is_refused() {
        let mut b = Bucket::default();
        b.push("aaaaaaaa", "m1", &"\u{1}".repeat(12_000), 0); // six bytes each once escaped
        assert!(matches!(b.fit("aaaaaaaa", 0), Err(SendError::Permanent(_))));
    }
}
