//! Polling the support mailbox over IMAP: finish what earlier polls handed over, fetch the
//! next batch after the cursor, convert it, and say where the next poll goes on.

use plugdesk_sdk::{InboundMessage, PollOutcome};

use crate::imap::{Cursor, FetchedMessage, ImapClient, ImapConfig, ImapError, Resume};
use crate::inbound::{Converted, OUTPUT_BUDGET, convert, convert_too_large, output_size};
use crate::settings::{After, ImapSettings, Security, Settings};
use crate::{Level, Transport};

/// How long one IMAP read may wait, in milliseconds: well below the host's time budget for a
/// `poll` call (30 s by default), so that a silent server ends in an error naming it rather
/// than in the host cutting the call off.
pub const IMAP_TIMEOUT_MS: u32 = 20_000;

/// The largest message fetched whole. The plugin's memory (128 MiB by default) holds a message
/// about three times over while it is read, parsed and handed over, and its decoded content
/// must fit into the host's output cap; a larger one is taken in as its header with a note, so
/// that it cannot stop the mailbox at every poll.
pub const MAX_FETCH_BYTES: usize = 16 * 1024 * 1024;

/// One poll of the mailbox `imap` describes, after `cursor` (`v:UIDVALIDITY:LASTUID`; none:
/// from the start). `connect(tls)` opens the connection.
///
/// With the cursor's `UIDVALIDITY` unchanged, `imap_after` is applied first to what earlier
/// polls handed over (UIDs up to the cursor still in the mailbox) — only now, because the host
/// stores a poll's messages and cursor together after the call returns, so mail is never marked
/// or moved before it is safe. Then one batch is fetched within `batch_messages` and
/// `batch_bytes`; the cursor moves past every message in it, skipped ones included. A changed
/// `UIDVALIDITY` starts over from UID 1 (the host stores a message once per external id).
///
/// # Errors
/// `imap HOST:PORT: …` naming what failed; the host then keeps the old cursor, and the next
/// poll goes on where the last good one ended.
pub fn poll<T: Transport>(
    imap: &ImapSettings,
    settings: &Settings,
    cursor: Option<&str>,
    connect: impl FnOnce(bool) -> Result<T, String>,
    log: &mut dyn FnMut(Level, &str),
) -> Result<PollOutcome, String> {
    let server = format!("imap {}:{}", imap.host, imap.port);
    let fail = |e: ImapError| format!("{server}: {e}");
    let previous = cursor
        .map(Cursor::parse)
        .transpose()
        .map_err(|e| format!("{e}; reset the channel's cursor to fetch from the start"))?;
    let transport = connect(imap.security == Security::Tls).map_err(|e| format!("{server}: cannot connect: {e}"))?;
    let config = ImapConfig { timeout_ms: IMAP_TIMEOUT_MS, max_literal: MAX_FETCH_BYTES, ..ImapConfig::default() };
    let mut client = ImapClient::connect(transport, config).map_err(fail)?;
    if imap.security == Security::StartTls {
        client.starttls().map_err(fail)?;
    }
    if !client.is_authenticated() {
        client.login(&imap.user, "imap_password").map_err(fail)?;
    }
    let info = client.select(&imap.mailbox).map_err(fail)?;
    let resume = Cursor::resume(previous.as_ref(), info.uid_validity);
    let start = match (&resume, previous) {
        (Resume::Continue { .. }, Some(previous)) => {
            finish(&mut client, imap, previous.last_uid).map_err(fail)?;
            previous
        }
        (Resume::Restart { reason, .. }, _) => {
            log(Level::Info, &format!("{server}: {reason}"));
            Cursor { uid_validity: info.uid_validity, last_uid: 0 }
        }
        (Resume::Continue { .. }, None) => Cursor { uid_validity: info.uid_validity, last_uid: 0 },
    };
    let batch = client.fetch_next(resume.from_uid(), imap.batch_messages, imap.batch_bytes).map_err(fail)?;
    // Everything is read: the session has nothing left to do, and how it ends does not matter.
    let _ = client.logout();

    let mut taken = take(batch.messages, OUTPUT_BUDGET, settings, log);
    let mut next = start.advanced_to(taken.last_uid);
    let more = batch.more || taken.cut;
    if let Some(big) = batch.too_large {
        log(
            Level::Warn,
            &format!(
                "{server}: message UID {} has {} bytes, over the {MAX_FETCH_BYTES}-byte limit: only its header is taken in",
                big.uid, big.size
            ),
        );
        match convert_too_large(big.header, big.size, MAX_FETCH_BYTES, settings, log) {
            Converted::Message(message) => taken.messages.push(*message),
            Converted::Skipped(_) => taken.skipped += 1,
        }
        next = next.advanced_to(big.uid);
    }
    if taken.messages.len() + taken.skipped > 0 {
        log(
            Level::Info,
            &format!(
                "{server}: took in {} messages from {}, skipped {}; cursor {next}{}",
                taken.messages.len(),
                imap.mailbox,
                taken.skipped,
                if more { "; more waiting" } else { "" }
            ),
        );
    }
    Ok(PollOutcome { messages: taken.messages, cursor: Some(next.to_string()), more })
}

/// What the fetched messages of a batch became.
struct Taken {
    /// The messages for the host, ascending by UID.
    messages: Vec<InboundMessage>,
    /// How many were skipped.
    skipped: usize,
    /// The highest UID handed over or skipped (0: none).
    last_uid: u32,
    /// Whether the batch was cut because the next message did not fit into the budget.
    cut: bool,
}

/// Converts fetched messages in UID order while their output fits into `budget` bytes (the
/// first one always fits, see [`crate::inbound::fit`]); the rest is left for the next poll.
fn take(
    fetched: Vec<FetchedMessage>,
    mut budget: usize,
    settings: &Settings,
    log: &mut dyn FnMut(Level, &str),
) -> Taken {
    let mut taken = Taken { messages: Vec::new(), skipped: 0, last_uid: 0, cut: false };
    for message in fetched {
        let uid = message.uid;
        match convert(message.raw, None, settings, log) {
            Converted::Message(message) => {
                let size = output_size(&message);
                if size > budget && !taken.messages.is_empty() {
                    taken.cut = true;
                    break;
                }
                budget = budget.saturating_sub(size);
                taken.messages.push(*message);
            }
            Converted::Skipped(_) => taken.skipped += 1,
        }
        taken.last_uid = uid;
    }
    taken
}

/// Applies `imap_after` to the messages up to `last_uid` still in the mailbox: marks the unseen
/// ones seen, or moves them all (creating the target mailbox when the server says it is
/// missing), or leaves them.
fn finish<T: Transport>(client: &mut ImapClient<T>, imap: &ImapSettings, last_uid: u32) -> Result<(), ImapError> {
    match imap.after {
        After::Keep => Ok(()),
        After::Seen => {
            let uids = client.uid_search_range(1, last_uid, true)?;
            client.mark_seen(&uids)
        }
        After::Move => {
            let uids = client.uid_search_range(1, last_uid, false)?;
            match client.move_to(&uids, &imap.move_to) {
                // Servers say `NO [TRYCREATE]` for a missing mailbox; any other refusal stays
                // the error when creating does not help.
                Err(refused @ ImapError::No { .. }) => {
                    if client.create(&imap.move_to).is_err() {
                        return Err(refused);
                    }
                    client.move_to(&uids, &imap.move_to)
                }
                other => other,
            }
        }
    }
}

#[cfg(test)]
mod tests;
