//! Triage for new tickets: "refund" raises the priority, tags the ticket and leaves a note
//! naming the customer's tier; "hello" answers the customer; "bogus" asks for an unknown
//! action; "refuse" refuses the event.

use plugdesk_sdk::{Action, Automation, AutomationDescriptor, Event};

struct Triage;

impl Automation for Triage {
    fn describe() -> AutomationDescriptor {
        AutomationDescriptor {
            id: "triage".into(),
            name: "Triage".into(),
            version: "0.1.0".into(),
            events: vec!["ticket.created".into()],
            settings_schema: "{\"type\":\"object\"}".into(),
            capabilities: vec![],
        }
    }

    fn handle_event(event: Event) -> Result<Vec<Action>, String> {
        let text = event.messages.iter().map(|m| m.text.to_lowercase()).collect::<Vec<_>>().join(" ");
        if text.contains("refuse") {
            return Err("this ticket is not for me".into());
        }
        if text.contains("bogus") {
            return Ok(vec![Action { name: "teleport".into(), args: "{}".into() }]);
        }
        let mut actions = Vec::new();
        if text.contains("refund") {
            actions.push(Action::update(serde_json::json!({ "priority": "high", "add_tags": ["refund"] })));
            actions.push(Action::note(&format!(
                "Refund request from {} ({} tier, {} open tickets)",
                event.customer.name, event.customer.tier, event.customer.open_tickets
            )));
        }
        if text.contains("hello") {
            actions.push(Action::reply("Hello! We are on it."));
        }
        Ok(actions)
    }
}

plugdesk_sdk::export_automation!(Triage);
