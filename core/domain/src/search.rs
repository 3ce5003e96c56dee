//! Full-text search over tickets, messages and customers: SQLite FTS5 (Porter stemming over
//! Unicode tokens, diacritics folded, so "Paket" finds "Pakete" and "Müller" finds "Muller") or a
//! PostgreSQL `tsvector` built from the English and the German dictionary. Ranked by BM25 /
//! `ts_rank`, among the newest matches (see [`RANK_WINDOW`]).

use sea_orm::{ConnectionTrait, DbBackend};
use serde::Serialize;

use crate::db;
use crate::error::{Error, Result};

/// Longest query accepted, in characters.
const MAX_QUERY_CHARS: usize = 200;
/// Relevance is ranked among the newest this-many matches. Ranking every match of a common
/// word in a million tickets costs hundreds of milliseconds; the newest matches come straight
/// off the index in id order, and in a helpdesk the recent conversation is the one wanted.
const RANK_WINDOW: i64 = 200;
/// How much of a matching text a hit shows.
const SNIPPET_CHARS: usize = 160;

/// One document to index.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The workspace.
    pub workspace_id: i64,
    /// `ticket`, `message` or `customer`.
    pub kind: &'static str,
    /// The id of the indexed record.
    pub ref_id: i64,
    /// The ticket it belongs to (tickets and messages).
    pub ticket_id: Option<i64>,
    /// The text.
    pub body: String,
}

/// Indexes one document.
pub async fn index<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    kind: &'static str,
    ref_id: i64,
    ticket_id: Option<i64>,
    body: &str,
) -> Result<()> {
    index_many(db, vec![Doc { workspace_id, kind, ref_id, ticket_id, body: body.to_owned() }]).await
}

/// Indexes documents with one multi-row insert.
pub async fn index_many<C: ConnectionTrait>(db: &C, docs: Vec<Doc>) -> Result<()> {
    db::exec_all(db, insert_statement(docs)).await
}

/// The insert that indexes `docs`, not yet run.
pub fn insert_statement(docs: Vec<Doc>) -> Vec<db::Sql> {
    let rows = docs
        .into_iter()
        .map(|d| vec![d.body.into(), d.workspace_id.into(), d.kind.into(), d.ref_id.into(), d.ticket_id.into()])
        .collect();
    db::insert_statement("search_docs", &["body", "workspace_id", "kind", "ref_id", "ticket_id"], rows)
}

/// Removes a record's documents (before re-indexing it).
pub async fn remove<C: ConnectionTrait>(db: &C, workspace_id: i64, kind: &'static str, ref_id: i64) -> Result<()> {
    db::exec(
        db,
        "DELETE FROM search_docs WHERE workspace_id = ? AND kind = ? AND ref_id = ?",
        vec![workspace_id.into(), kind.into(), ref_id.into()],
    )
    .await?;
    Ok(())
}

/// One search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// `ticket`, `message` or `customer`.
    pub kind: String,
    /// Id of the record of that kind.
    pub id: i64,
    /// The ticket, for tickets and messages.
    pub ticket_id: Option<i64>,
    /// The ticket's number.
    pub ticket_number: Option<i64>,
    /// The ticket's subject, or the customer's name.
    pub title: String,
    /// The start of the matching text.
    pub snippet: String,
    /// Relevance, higher is better.
    pub score: f64,
}

/// Splits a user's query into words, dropping every character with meaning in a query syntax,
/// so that no input can make the query fail to parse.
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).take(16).collect()
}

/// Relevance of a SQLite match among the newest [`RANK_WINDOW`]: a subject or a customer
/// beats a message body, and more occurrences of the words beat fewer. SQLite's `bm25` would
/// need each word's document frequency, which means reading the word's whole posting list
/// (100+ ms for a common word in a million tickets); this needs only the matched texts.
fn local_score(kind: &str, body: &str, words: &[String]) -> f64 {
    let weight = match kind {
        "ticket" => 3.0,
        "customer" => 2.0,
        _ => 1.0,
    };
    let text = body.to_lowercase();
    let hits: usize = words.iter().map(|w| text.matches(w.as_str()).count().min(5)).sum();
    let length = (text.len() as f64 / 400.0).max(1.0);
    weight + hits as f64 / length
}

fn snippet(body: &str) -> String {
    let mut s: String = body.chars().take(SNIPPET_CHARS).collect();
    if body.chars().count() > SNIPPET_CHARS {
        s.push('…');
    }
    s
}

/// Searches the workspace; all words must match (as stems: "parcels" finds "parcel"), best
/// first. There is no prefix matching: a prefix expands to every index term that starts with
/// it, and merging their posting lists cost 100+ ms per query at a million tickets.
///
/// # Errors
/// [`Error::Invalid`] for an empty or over-long query.
pub async fn search<C: ConnectionTrait>(db: &C, workspace_id: i64, q: &str, limit: u64) -> Result<Vec<Hit>> {
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(Error::invalid("q", format!("query is longer than {MAX_QUERY_CHARS} characters")));
    }
    let words = words(q);
    if words.is_empty() {
        return Err(Error::invalid("q", "query has no words to search for"));
    }
    let rows = match db.get_database_backend() {
        DbBackend::Postgres => {
            let text = words.join(" ");
            db::query_all(
                db,
                "SELECT kind, ref_id, ticket_id, body, score FROM ( \
                   SELECT d.id, d.kind, d.ref_id, d.ticket_id, d.body, ts_rank(d.tsv, q.q) AS score \
                   FROM search_docs d, (SELECT plainto_tsquery('english', ?) || plainto_tsquery('german', ?) AS q) q \
                   WHERE d.workspace_id = ? AND d.tsv @@ q.q ORDER BY d.id DESC LIMIT ?) recent \
                 ORDER BY score DESC, id DESC LIMIT ?",
                vec![text.clone().into(), text.into(), workspace_id.into(), RANK_WINDOW.into(), (limit as i64).into()],
            )
            .await?
        }
        _ => {
            let fts: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            db::query_all(
                db,
                "SELECT rowid, kind, ref_id, ticket_id, body FROM search_docs \
                 WHERE search_docs MATCH ? AND workspace_id = ? ORDER BY rowid DESC LIMIT ?",
                vec![fts.join(" ").into(), workspace_id.into(), RANK_WINDOW.into()],
            )
            .await?
        }
    };
    let mut hits = Vec::with_capacity(rows.len());
    for r in &rows {
        let kind: String = db::col(r, "kind")?;
        let body: String = db::col(r, "body")?;
        let score = match r.try_get::<f64>("", "score").or_else(|_| r.try_get::<f32>("", "score").map(f64::from)) {
            Ok(s) => s,
            Err(_) => local_score(&kind, &body, &words),
        };
        hits.push(Hit {
            id: db::col(r, "ref_id")?,
            ticket_id: db::col(r, "ticket_id")?,
            ticket_number: None,
            title: String::new(),
            snippet: snippet(&body),
            score,
            kind,
        });
    }
    // Stable: among equal scores the newer match (fetched first) stays first.
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(limit as usize);
    follow_merges(db, &mut hits).await?;
    // Titles: one query for the page's tickets, one for its customers.
    let tickets: Vec<i64> = hits.iter().filter_map(|h| h.ticket_id).collect();
    let customers: Vec<i64> = hits.iter().filter(|h| h.ticket_id.is_none()).map(|h| h.id).collect();
    let mut titles: std::collections::HashMap<(bool, i64), (Option<i64>, String)> = std::collections::HashMap::new();
    for (is_ticket, ids, sql) in [
        (true, &tickets, "SELECT id, number, subject AS title FROM tickets"),
        (false, &customers, "SELECT id, NULL AS number, name AS title FROM customers"),
    ] {
        if ids.is_empty() {
            continue;
        }
        // `+workspace_id` keeps SQLite on the primary key: offered the workspace index it
        // would scan the workspace's million tickets.
        let sql = format!("{sql} WHERE id IN ({}) AND +workspace_id = ?", vec!["?"; ids.len()].join(", "));
        let mut values: Vec<sea_orm::Value> = ids.iter().map(|id| sea_orm::Value::from(*id)).collect();
        values.push(workspace_id.into());
        for row in db::query_all(db, &sql, values).await? {
            titles.insert((is_ticket, db::col(&row, "id")?), (db::col(&row, "number")?, db::col(&row, "title")?));
        }
    }
    for h in &mut hits {
        let key = match h.ticket_id {
            Some(t) => (true, t),
            None => (false, h.id),
        };
        if let Some((number, title)) = titles.get(&key) {
            h.ticket_number = *number;
            h.title = title.clone();
        }
    }
    Ok(hits)
}

/// Points the hits of messages that moved with a merge at the ticket they live in now (the
/// index keeps the ticket they were written in; a merged ticket may itself have been merged).
async fn follow_merges<C: ConnectionTrait>(db: &C, hits: &mut [Hit]) -> Result<()> {
    for _ in 0..4 {
        let moved_from: Vec<i64> = hits.iter().filter(|h| h.kind == "message").filter_map(|h| h.ticket_id).collect();
        if moved_from.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT source_id, target_id FROM ticket_merges WHERE source_id IN ({})",
            vec!["?"; moved_from.len()].join(", ")
        );
        let values: Vec<sea_orm::Value> = moved_from.iter().map(|id| sea_orm::Value::from(*id)).collect();
        let moved: std::collections::HashMap<i64, i64> = db::query_all(db, &sql, values)
            .await?
            .iter()
            .map(|r| Ok((db::col(r, "source_id")?, db::col(r, "target_id")?)))
            .collect::<Result<_>>()?;
        if moved.is_empty() {
            return Ok(());
        }
        for h in hits.iter_mut().filter(|h| h.kind == "message") {
            if let Some(target) = h.ticket_id.and_then(|t| moved.get(&t)) {
                h.ticket_id = Some(*target);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_syntax_characters_never_reach_the_engine() {
        assert_eq!(words("lost \"parcel\" AND (refund*) -x"), vec!["lost", "parcel", "and", "refund", "x"]);
        assert_eq!(words("Müller Straße"), vec!["müller", "straße"]);
        assert!(words("\"*()").is_empty());
    }
}
