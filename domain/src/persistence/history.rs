//! Writes history events inside the caller's transaction (R-USR-2, R-USR-7).

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use uuid::Uuid;

use super::entities::history_event;
use crate::error::DomainResult;
use crate::model::{FieldChange, Millis};
use crate::policy::Caller;

/// What a history event is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject {
    Organisation(Uuid),
    Unit(Uuid),
    User(Uuid),
    Certificate(Uuid),
    Group(Uuid),
}

impl Subject {
    fn kind_and_id(self) -> (&'static str, Uuid) {
        match self {
            Subject::Organisation(id) => ("ORGANISATION", id),
            Subject::Unit(id) => ("UNIT", id),
            Subject::User(id) => ("USER", id),
            Subject::Certificate(id) => ("CERTIFICATE", id),
            Subject::Group(id) => ("GROUP", id),
        }
    }
}

pub(crate) struct NewEvent<'a> {
    pub organisation_id: Option<Uuid>,
    pub subject: Subject,
    pub activity: crate::model::Activity,
    pub caller: &'a Caller,
    pub at: Millis,
    pub changes: Vec<FieldChange>,
}

pub(crate) fn to_row(event: NewEvent<'_>) -> history_event::ActiveModel {
    let (kind, subject_id) = event.subject.kind_and_id();
    history_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        organisation_id: Set(event.organisation_id),
        subject_kind: Set(kind.to_owned()),
        subject_id: Set(subject_id),
        occurred_at: Set(event.at),
        actor: Set(event.caller.actor()),
        actor_name: Set(event.caller.display_name()),
        actor_email: Set(event.caller.identity.as_ref().map(|i| i.email.clone())),
        on_behalf_of: Set(event.caller.on_behalf_of()),
        activity: Set(event.activity.as_str().to_owned()),
        changes: Set(changes_json(&event.changes)),
    }
}

pub(crate) async fn record(db: &impl ConnectionTrait, event: NewEvent<'_>) -> DomainResult<()> {
    history_event::Entity::insert(to_row(event))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Many events in few statements (a bulk write: one per row it changed).
pub(crate) async fn record_all(db: &impl ConnectionTrait, events: Vec<NewEvent<'_>>) -> DomainResult<()> {
    super::insert_in_chunks(db, events.into_iter().map(to_row).collect()).await?;
    Ok(())
}

pub(crate) fn changes_json(changes: &[FieldChange]) -> String {
    serde_json::Value::Array(
        changes
            .iter()
            .map(|c| serde_json::json!({"field": c.field, "before": c.before, "after": c.after}))
            .collect(),
    )
    .to_string()
}

pub(crate) fn changes_from_json(text: &str) -> Vec<FieldChange> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let get = |k: &str| item.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            FieldChange {
                field: get("field"),
                before: get("before"),
                after: get("after"),
            }
        })
        .collect()
}

/// Appends a change when `before` and `after` differ.
pub(crate) fn diff(changes: &mut Vec<FieldChange>, field: &str, before: impl ToString, after: impl ToString) {
    let (before, after) = (before.to_string(), after.to_string());
    if before != after {
        changes.push(FieldChange {
            field: field.to_owned(),
            before,
            after,
        });
    }
}

/// The first or the last of a subject's events of one activity.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    First,
    Last,
}

/// What `field` became in the first or last `activity` event of `subject`,
/// for what a row does not keep (the address a user was created with, the
/// reason of their deactivation). None: no such event, or it changed no
/// such field.
pub(crate) async fn recorded_change(
    db: &impl ConnectionTrait,
    subject: Subject,
    activity: crate::model::Activity,
    which: Which,
    field: &str,
) -> DomainResult<Option<String>> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let (kind, subject_id) = subject.kind_and_id();
    let events = history_event::Entity::find()
        .filter(history_event::Column::SubjectKind.eq(kind))
        .filter(history_event::Column::SubjectId.eq(subject_id))
        .filter(history_event::Column::Activity.eq(activity.as_str()));
    // Ids are UUIDv7: their order is the events' order.
    let event = match which {
        Which::First => events.order_by_asc(history_event::Column::Id),
        Which::Last => events.order_by_desc(history_event::Column::Id),
    }
    .one(db)
    .await?;
    Ok(event.and_then(|event| {
        changes_from_json(&event.changes)
            .into_iter()
            .find(|change| change.field == field)
            .map(|change| change.after)
    }))
}
