//! Satisfaction surveys and agent notifications: the two things workflows leave for people.
//!
//! A workflow's `request_survey()` stores a survey with a random token and sends the
//! `survey_invitation` template, whose `{{survey.link}}` is `{public_url}/survey/{token}`. The
//! customer answers on that page (no login: the token is the key), once; the answer is recorded
//! as a `survey.answered` event (`{"rating": 1-5, "comment": …}`), which workflows can react to.
//!
//! A workflow's `notify(agent_id, text)` leaves a notification for an agent, listed by
//! `GET /api/v1/notifications` for the agent whose token asks.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::db;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};

/// A customer's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// 1 (bad) to 5 (very good).
    pub rating: i32,
    /// Optional words, at most 4,000 characters.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The survey behind a token: (id, workspace, ticket, answered).
async fn find(core: &crate::Domain, token: &str) -> Result<(i64, i64, i64, bool)> {
    if token.len() != 32 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NotFound("survey"));
    }
    let r = db::query_one(
        core.db(),
        "SELECT id, workspace_id, ticket_id, answered_at FROM surveys WHERE token = ?",
        vec![token.into()],
    )
    .await?
    .ok_or(Error::NotFound("survey"))?;
    Ok((
        db::col(&r, "id")?,
        db::col(&r, "workspace_id")?,
        db::col(&r, "ticket_id")?,
        db::col::<Option<i64>>(&r, "answered_at")?.is_some(),
    ))
}

/// Records an answer (once) and a `survey.answered` event.
///
/// # Errors
/// [`Error::NotFound`] for an unknown token, [`Error::Conflict`] when answered already,
/// [`Error::Invalid`] for a rating outside 1-5 or a long comment.
pub async fn answer(core: &crate::Domain, token: &str, answer: &Answer) -> Result<()> {
    if !(1..=5).contains(&answer.rating) {
        return Err(Error::invalid("rating", "rating must be 1 to 5"));
    }
    let comment = answer.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned);
    if comment.as_ref().is_some_and(|c| c.chars().count() > 4000) {
        return Err(Error::invalid("comment", "comment is longer than 4,000 characters"));
    }
    let (id, workspace_id, ticket_id, _) = find(core, token).await?;
    let txn = db::begin_write(core.db()).await?;
    let changed = db::exec(
        &txn,
        "UPDATE surveys SET answered_at = ?, rating = ?, comment = ? WHERE id = ? AND answered_at IS NULL",
        vec![crate::now_ms().into(), answer.rating.into(), comment.clone().into(), id.into()],
    )
    .await?;
    if changed != 1 {
        return Err(Error::Conflict("this survey has been answered already".into()));
    }
    let customer_id = crate::ticket::find(&txn, workspace_id, ticket_id).await?.customer_id;
    if answer.rating <= 2 {
        let body = comment.clone().unwrap_or_default();
        let actor = format!("customer:{customer_id}");
        notify_assignee(&txn, workspace_id, ticket_id, NotificationKind::Unhappy, &body, &actor).await?;
    }
    let events = event::append(
        &txn,
        workspace_id,
        vec![NewEvent {
            kind: "survey.answered",
            actor: format!("customer:{customer_id}"),
            ticket_id: Some(ticket_id),
            customer_id: Some(customer_id),
            changes: json!({ "survey_id": id, "rating": answer.rating, "comment": comment }),
        }],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    Ok(())
}

/// The survey page: five buttons and a comment field, or a thank-you when answered.
///
/// # Errors
/// [`Error::NotFound`] for an unknown token.
pub async fn page(core: &crate::Domain, token: &str, notice: Option<&str>) -> Result<String> {
    let (_, _, _, answered) = find(core, token).await?;
    let body = if answered {
        format!("<p>{}</p>", notice.unwrap_or("Thank you — your answer has been recorded."))
    } else {
        let buttons: String = (1..=5)
            .map(|n| format!("<button name=\"rating\" value=\"{n}\" type=\"submit\">{}</button>", "★".repeat(n)))
            .collect();
        format!(
            "<form method=\"post\" action=\"/survey/{token}\"><p>How satisfied were you with our help?</p>\
             <p><textarea name=\"comment\" maxlength=\"4000\" rows=\"4\" cols=\"50\" placeholder=\"Anything you want to tell us (optional)\"></textarea></p>\
             <p>{buttons}</p></form>"
        )
    };
    Ok(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Survey</title><style>body{{font-family:sans-serif;max-width:40em;margin:3em auto}}button{{margin:.2em;font-size:1.2em}}</style></head>\
         <body>{body}</body></html>"
    ))
}

/// The workspace's latest answered surveys and the average rating.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Domain, workspace_id: i64) -> Result<Json> {
    let rows = db::query_all(
        core.db(),
        "SELECT id, ticket_id, created_at, answered_at, rating, comment FROM surveys WHERE workspace_id = ? ORDER BY id DESC LIMIT 200",
        vec![workspace_id.into()],
    )
    .await?;
    let mut sum = 0i64;
    let mut answered = 0i64;
    let items = rows
        .iter()
        .map(|r| {
            let rating: Option<i32> = db::col(r, "rating")?;
            if let Some(x) = rating {
                sum += i64::from(x);
                answered += 1;
            }
            Ok(json!({
                "id": db::col::<i64>(r, "id")?,
                "ticket_id": db::col::<i64>(r, "ticket_id")?,
                "sent_at": crate::rfc3339(db::col(r, "created_at")?),
                "answered_at": db::col::<Option<i64>>(r, "answered_at")?.map(crate::rfc3339),
                "rating": rating,
                "comment": db::col::<Option<String>>(r, "comment")?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let average = (answered > 0).then(|| sum as f64 / answered as f64);
    Ok(json!({ "items": items, "answered": answered, "average_rating": average }))
}

/// A customer's answer to a survey, for the customer's panel.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerAnswer {
    /// The ticket the survey asked about.
    pub ticket_id: i64,
    /// Its number.
    pub number: i64,
    /// 1 to 5.
    pub rating: i32,
    /// What the customer wrote, if anything.
    pub comment: Option<String>,
    /// When, Unix milliseconds.
    pub answered_at: i64,
}

/// The customer's latest answered surveys, newest first.
///
/// # Errors
/// Database errors.
pub async fn for_customer<C: sea_orm::ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    customer_id: i64,
    limit: u64,
) -> Result<Vec<CustomerAnswer>> {
    let rows = db::query_all(
        db,
        "SELECT s.ticket_id, t.number, s.rating, s.comment, s.answered_at FROM surveys s JOIN tickets t ON t.id = s.ticket_id \
         WHERE t.customer_id = ? AND t.workspace_id = ? AND s.rating IS NOT NULL ORDER BY s.answered_at DESC LIMIT ?",
        vec![customer_id.into(), workspace_id.into(), (limit as i64).into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CustomerAnswer {
                ticket_id: db::col(r, "ticket_id")?,
                number: db::col(r, "number")?,
                rating: db::col(r, "rating")?,
                comment: db::col(r, "comment")?,
                answered_at: db::col(r, "answered_at")?,
            })
        })
        .collect()
}

/// What a notification is about; the web pages say it in the agent's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    /// A workflow's `notify(agent, text)`: the text is the workflow's.
    Workflow,
    /// A ticket was assigned to the agent by someone else.
    Assigned,
    /// An SLA clock of the agent's ticket is about to fall due.
    SlaWarning,
    /// An SLA clock of the agent's ticket was missed.
    SlaBreached,
    /// A customer of the agent's ticket answered the survey with 1 or 2 of 5.
    Unhappy,
}

impl NotificationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Workflow => "workflow",
            NotificationKind::Assigned => "assigned",
            NotificationKind::SlaWarning => "sla_warning",
            NotificationKind::SlaBreached => "sla_breached",
            NotificationKind::Unhappy => "unhappy",
        }
    }
}

/// Leaves a notification for an agent (inside the caller's transaction); its id.
///
/// # Errors
/// Database errors.
pub async fn notify<C: sea_orm::ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: i64,
    ticket_id: Option<i64>,
    kind: NotificationKind,
    body: &str,
    actor: &str,
) -> Result<i64> {
    let r = db::query_one(
        db,
        "INSERT INTO notifications (workspace_id, agent_id, ticket_id, kind, body, actor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            agent_id.into(),
            ticket_id.into(),
            kind.as_str().into(),
            body.into(),
            actor.into(),
            crate::now_ms().into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    db::col(&r, "id")
}

/// The assignee of a ticket, who hears about its SLA clocks and surveys.
async fn assignee<C: sea_orm::ConnectionTrait>(db: &C, ticket_id: i64) -> Result<Option<i64>> {
    let row = db::query_one(db, "SELECT assignee_id FROM tickets WHERE id = ?", vec![ticket_id.into()]).await?;
    Ok(match row {
        Some(r) => db::col(&r, "assignee_id")?,
        None => None,
    })
}

/// Tells a ticket's assignee, if it has one.
///
/// # Errors
/// Database errors.
pub async fn notify_assignee<C: sea_orm::ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    ticket_id: i64,
    kind: NotificationKind,
    body: &str,
    actor: &str,
) -> Result<()> {
    if let Some(agent) = assignee(db, ticket_id).await? {
        notify(db, workspace_id, agent, Some(ticket_id), kind, body, actor).await?;
    }
    Ok(())
}

/// An agent's notifications, newest first (at most 100; only unread ones if asked).
///
/// # Errors
/// Database errors.
pub async fn notifications(core: &crate::Domain, workspace_id: i64, agent_id: i64, unread: bool) -> Result<Json> {
    let sql = if unread {
        "SELECT * FROM notifications WHERE workspace_id = ? AND agent_id = ? AND read_at IS NULL ORDER BY id DESC LIMIT 100"
    } else {
        "SELECT * FROM notifications WHERE workspace_id = ? AND agent_id = ? ORDER BY id DESC LIMIT 100"
    };
    let rows = db::query_all(core.db(), sql, vec![workspace_id.into(), agent_id.into()]).await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": db::col::<i64>(r, "id")?,
                "ticket_id": db::col::<Option<i64>>(r, "ticket_id")?,
                "kind": db::col::<String>(r, "kind")?,
                "body": db::col::<String>(r, "body")?,
                "from": db::col::<String>(r, "actor")?,
                "created_at": crate::rfc3339(db::col(r, "created_at")?),
                "read_at": db::col::<Option<i64>>(r, "read_at")?.map(crate::rfc3339),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "items": items }))
}

/// Marks all of the agent's notifications read (they have seen the list); how many were unread.
///
/// # Errors
/// Database errors.
pub async fn mark_all_read(core: &crate::Domain, workspace_id: i64, agent_id: i64) -> Result<u64> {
    db::exec(
        core.db(),
        "UPDATE notifications SET read_at = ? WHERE workspace_id = ? AND agent_id = ? AND read_at IS NULL",
        vec![crate::now_ms().into(), workspace_id.into(), agent_id.into()],
    )
    .await
}

/// Marks one of the agent's notifications read.
///
/// # Errors
/// [`Error::NotFound`] when it is not the agent's.
pub async fn mark_read(core: &crate::Domain, workspace_id: i64, agent_id: i64, id: i64) -> Result<()> {
    let n = db::exec(
        core.db(),
        "UPDATE notifications SET read_at = COALESCE(read_at, ?) WHERE id = ? AND workspace_id = ? AND agent_id = ?",
        vec![crate::now_ms().into(), id.into(), workspace_id.into(), agent_id.into()],
    )
    .await?;
    if n == 1 { Ok(()) } else { Err(Error::NotFound("notification")) }
}
