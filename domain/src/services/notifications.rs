//! In-app notifications and per-kind delivery preferences (R-NOTE-1). A
//! notification row and its mail are written in the transaction of the change
//! that causes them.

use std::collections::HashMap;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::mail::{MailKind, render};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{notification, notification_preference, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::Caller;

crate::string_enum_pub!(
    /// What a notification is about; preferences are kept per kind.
    NotificationKind {
        Account => "ACCOUNT",
        AnonymityRequest => "ANONYMITY_REQUEST",
        ImportFinished => "IMPORT_FINISHED",
        Certificate => "CERTIFICATE",
        RightsRequest => "RIGHTS_REQUEST",
        JoinRequest => "JOIN_REQUEST",
    }
);

crate::string_enum_pub!(
    DeliveryChannel {
        InApp => "IN_APP",
        Mail => "MAIL",
        Both => "BOTH",
    }
);

impl DeliveryChannel {
    fn in_app(self) -> bool {
        matches!(self, Self::InApp | Self::Both)
    }
    fn mail(self) -> bool {
        matches!(self, Self::Mail | Self::Both)
    }
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub subject_id: Option<Uuid>,
    pub created_at: Millis,
    pub read_at: Option<Millis>,
}

async fn channel_of(
    db: &impl ConnectionTrait,
    recipient: &user::Model,
    kind: NotificationKind,
) -> DomainResult<DeliveryChannel> {
    Ok(
        notification_preference::Entity::find_by_id((recipient.id, kind.as_str().to_owned()))
            .one(db)
            .await?
            .map(|p| parse::<DeliveryChannel>(&p.channel))
            .transpose()?
            .unwrap_or(DeliveryChannel::Both),
    )
}

async fn insert_in_app(
    db: &impl ConnectionTrait,
    recipient: &user::Model,
    kind: NotificationKind,
    mail_kind: MailKind,
    vars: &[(&str, &str)],
    subject_id: Option<Uuid>,
) -> DomainResult<()> {
    let language: Language = parse(&recipient.language)?;
    let to_name = format!("{} {}", recipient.first_name, recipient.surname);
    let rendered = render(mail_kind, language, &to_name, vars)?;
    notification::Entity::insert(notification::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(recipient.id),
        organisation_id: Set(recipient.organisation_id),
        kind: Set(kind.as_str().into()),
        title: Set(rendered.subject),
        body: Set(rendered.text),
        subject_id: Set(subject_id),
        created_at: Set(now_millis()),
        read_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

fn own_user(caller: &Caller) -> DomainResult<Uuid> {
    caller
        .user_id()
        .ok_or_else(|| DomainError::denied("notifications belong to users; operators have none"))
}

impl Domain {
    /// Tells `recipient` about something, in-app and/or by mail as they chose.
    pub(crate) async fn notify(
        &self,
        db: &impl ConnectionTrait,
        recipient: &user::Model,
        kind: NotificationKind,
        mail_kind: MailKind,
        vars: &[(&str, &str)],
        subject_id: Option<Uuid>,
    ) -> DomainResult<()> {
        let channel = channel_of(db, recipient, kind).await?;
        let language: Language = parse(&recipient.language)?;
        let to_name = format!("{} {}", recipient.first_name, recipient.surname);
        if channel.in_app() {
            insert_in_app(db, recipient, kind, mail_kind, vars, subject_id).await?;
        }
        if channel.mail() {
            self.enqueue_mail(
                db,
                Some(recipient.organisation_id),
                mail_kind,
                &recipient.email,
                &to_name,
                language,
                vars,
            )
            .await?;
        }
        Ok(())
    }

    /// The in-app half of `notify`, for news whose mail goes out on its own
    /// (a mail that carries a secret, which an in-app notification must
    /// not store): written when the recipient wants in-app notifications.
    pub(crate) async fn notify_in_app(
        &self,
        db: &impl ConnectionTrait,
        recipient: &user::Model,
        kind: NotificationKind,
        mail_kind: MailKind,
        vars: &[(&str, &str)],
        subject_id: Option<Uuid>,
    ) -> DomainResult<()> {
        if channel_of(db, recipient, kind).await?.in_app() {
            insert_in_app(db, recipient, kind, mail_kind, vars, subject_id).await?;
        }
        Ok(())
    }

    /// The caller's own notifications, newest first.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_notifications(
        &self,
        caller: &Caller,
        unread_only: bool,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Notification>> {
        let user_id = own_user(caller)?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let list = format!("notifications:{user_id}");
        let mut query = notification::Entity::find().filter(notification::Column::UserId.eq(user_id));
        if unread_only {
            query = query.filter(notification::Column::ReadAt.is_null());
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            notification::Column::Id,
            paging::Order::Descending,
            &list,
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(|row| {
                Ok(Notification {
                    id: row.id,
                    kind: parse(&row.kind)?,
                    title: row.title,
                    body: row.body,
                    subject_id: row.subject_id,
                    created_at: row.created_at,
                    read_at: row.read_at,
                })
            })
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Marks the caller's notifications read; others' ids are ignored.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn mark_notifications_read(&self, caller: &Caller, ids: &[Uuid]) -> DomainResult<u64> {
        let user_id = own_user(caller)?;
        if ids.is_empty() || ids.len() > 500 {
            return Err(DomainError::invalid("ids", "name 1 to 500 notifications"));
        }
        let result = notification::Entity::update_many()
            .col_expr(notification::Column::ReadAt, Expr::value(now_millis()))
            .filter(notification::Column::UserId.eq(user_id))
            .filter(notification::Column::Id.is_in(ids.to_vec()))
            .filter(notification::Column::ReadAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Every kind with the caller's channel (BOTH where never chosen).
    pub async fn notification_preferences(
        &self,
        caller: &Caller,
    ) -> DomainResult<Vec<(NotificationKind, DeliveryChannel)>> {
        let user_id = own_user(caller)?;
        let chosen: HashMap<String, String> = notification_preference::Entity::find()
            .filter(notification_preference::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|p| (p.kind, p.channel))
            .collect();
        NotificationKind::ALL
            .iter()
            .map(|kind| {
                let channel = chosen
                    .get(kind.as_str())
                    .map(|c| parse(c))
                    .transpose()?
                    .unwrap_or(DeliveryChannel::Both);
                Ok((*kind, channel))
            })
            .collect()
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn update_notification_preferences(
        &self,
        caller: &Caller,
        choices: &[(NotificationKind, DeliveryChannel)],
    ) -> DomainResult<Vec<(NotificationKind, DeliveryChannel)>> {
        let user_id = own_user(caller)?;
        if choices.is_empty() {
            return Err(DomainError::invalid("preferences", "name at least one kind"));
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        // The person's row first, so two changes of one person's settings
        // queue (PostgreSQL; SQLite has one writer): read unlocked, both
        // read the same settings, and history's "before" of the second was
        // what the first had already changed.
        sea_orm::QuerySelect::lock(
            crate::persistence::entities::user::Entity::find_by_id(user_id),
            sea_orm::sea_query::LockType::Update,
        )
        .one(&txn)
        .await?;
        let mut chosen: HashMap<String, String> = notification_preference::Entity::find()
            .filter(notification_preference::Column::UserId.eq(user_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|row| (row.kind, row.channel))
            .collect();
        let mut changes = Vec::new();
        for (kind, channel) in choices {
            // What this request set before counts, as it did when each
            // choice was read back from the table.
            let before = chosen
                .insert(kind.as_str().to_owned(), channel.as_str().to_owned())
                .unwrap_or_else(|| DeliveryChannel::Both.as_str().to_owned());
            if before != channel.as_str() {
                changes.push(FieldChange {
                    field: format!("notification_preferences.{}", kind.as_str()),
                    before,
                    after: channel.as_str().to_owned(),
                });
            }
            notification_preference::Entity::insert(notification_preference::ActiveModel {
                user_id: Set(user_id),
                kind: Set(kind.as_str().into()),
                channel: Set(channel.as_str().into()),
            })
            .on_conflict(
                OnConflict::columns([
                    notification_preference::Column::UserId,
                    notification_preference::Column::Kind,
                ])
                .update_column(notification_preference::Column::Channel)
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        // A setting of the person's own: history shows who changed it (the
        // one acting, through a share, on the owner's behalf).
        if !changes.is_empty() {
            history::record(
                &txn,
                NewEvent {
                    organisation_id: caller.organisation_id(),
                    subject: Subject::User(user_id),
                    activity: Activity::NotificationPreferencesChanged,
                    caller,
                    at: now_millis(),
                    changes,
                },
            )
            .await?;
        }
        txn.commit().await?;
        self.notification_preferences(caller).await
    }
}
