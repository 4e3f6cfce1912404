use orgadmin_domain::services::notifications::{DeliveryChannel, Notification, NotificationKind};
use orgadmin_domain::services::outbox::OutboxEntry;
use orgadmin_domain::{Domain, DomainError};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct NotificationHandler {
    pub domain: Domain,
}

fn kind_to_pb(kind: NotificationKind) -> pb::NotificationKind {
    match kind {
        NotificationKind::Account => pb::NotificationKind::Account,
        NotificationKind::AnonymityRequest => pb::NotificationKind::AnonymityRequest,
        NotificationKind::ImportFinished => pb::NotificationKind::ImportFinished,
        NotificationKind::Certificate => pb::NotificationKind::Certificate,
        NotificationKind::RightsRequest => pb::NotificationKind::RightsRequest,
        NotificationKind::JoinRequest => pb::NotificationKind::JoinRequest,
    }
}

fn channel_to_pb(channel: DeliveryChannel) -> pb::DeliveryChannel {
    match channel {
        DeliveryChannel::InApp => pb::DeliveryChannel::InApp,
        DeliveryChannel::Mail => pb::DeliveryChannel::Mail,
        DeliveryChannel::Both => pb::DeliveryChannel::Both,
    }
}

/// `i` is the preference's index in the request (`preferences[1].kind`).
fn preference_from_pb(
    i: usize,
    p: &pb::NotificationPreference,
) -> Result<(NotificationKind, DeliveryChannel), DomainError> {
    let kind = match pb::NotificationKind::try_from(p.kind) {
        Ok(pb::NotificationKind::Account) => NotificationKind::Account,
        Ok(pb::NotificationKind::AnonymityRequest) => NotificationKind::AnonymityRequest,
        Ok(pb::NotificationKind::ImportFinished) => NotificationKind::ImportFinished,
        Ok(pb::NotificationKind::Certificate) => NotificationKind::Certificate,
        Ok(pb::NotificationKind::RightsRequest) => NotificationKind::RightsRequest,
        Ok(pb::NotificationKind::JoinRequest) => NotificationKind::JoinRequest,
        _ => {
            return Err(DomainError::invalid(
                format!("preferences[{i}].kind"),
                "must be a known NotificationKind, not UNSPECIFIED",
            ));
        }
    };
    let channel = match pb::DeliveryChannel::try_from(p.channel) {
        Ok(pb::DeliveryChannel::InApp) => DeliveryChannel::InApp,
        Ok(pb::DeliveryChannel::Mail) => DeliveryChannel::Mail,
        Ok(pb::DeliveryChannel::Both) => DeliveryChannel::Both,
        _ => {
            return Err(DomainError::invalid(
                format!("preferences[{i}].channel"),
                "must be IN_APP, MAIL or BOTH",
            ));
        }
    };
    Ok((kind, channel))
}

fn preferences_to_pb(prefs: &[(NotificationKind, DeliveryChannel)]) -> Vec<pb::NotificationPreference> {
    prefs
        .iter()
        .map(|(k, c)| pb::NotificationPreference {
            kind: kind_to_pb(*k) as i32,
            channel: channel_to_pb(*c) as i32,
        })
        .collect()
}

fn notification_to_pb(n: &Notification) -> pb::Notification {
    pb::Notification {
        id: n.id.to_string(),
        kind: kind_to_pb(n.kind) as i32,
        title: n.title.clone(),
        body: n.body.clone(),
        subject_id: n.subject_id.map(|s| s.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(n.created_at)),
        read_time: opt_timestamp(n.read_at),
    }
}

fn mail_to_pb(m: &OutboxEntry) -> pb::OutboxMail {
    pb::OutboxMail {
        id: m.id.to_string(),
        organisation_id: m.organisation_id.map(|o| o.to_string()).unwrap_or_default(),
        kind: m.kind.clone(),
        recipient: m.recipient.clone(),
        state: m.state.clone(),
        attempts: m.attempts,
        last_error: m.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp(m.created_at)),
        next_attempt_time: Some(timestamp(m.next_attempt_at)),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationHandler {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let page = self
            .domain
            .list_notifications(&caller, r.unread_only, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page.items.iter().map(notification_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkNotificationsReadResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let ids = request
            .get_ref()
            .ids
            .iter()
            .enumerate()
            .map(|(i, value)| id(&format!("ids[{i}]"), value))
            .collect::<Result<Vec<_>, _>>()
            .into_status()?;
        let marked = self.domain.mark_notifications_read(&caller, &ids).await.into_status()?;
        Ok(Response::new(pb::MarkNotificationsReadResponse {
            marked: marked as i32,
        }))
    }

    async fn get_notification_preferences(
        &self,
        request: Request<pb::GetNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetNotificationPreferencesResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let prefs = self.domain.notification_preferences(&caller).await.into_status()?;
        Ok(Response::new(pb::GetNotificationPreferencesResponse {
            preferences: preferences_to_pb(&prefs),
        }))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateNotificationPreferencesResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let choices = request
            .get_ref()
            .preferences
            .iter()
            .enumerate()
            .map(|(i, p)| preference_from_pb(i, p))
            .collect::<Result<Vec<_>, _>>()
            .into_status()?;
        let prefs = self
            .domain
            .update_notification_preferences(&caller, &choices)
            .await
            .into_status()?;
        Ok(Response::new(pb::UpdateNotificationPreferencesResponse {
            preferences: preferences_to_pb(&prefs),
        }))
    }

    async fn list_failed_mails(
        &self,
        request: Request<pb::ListFailedMailsRequest>,
    ) -> Result<Response<pb::ListFailedMailsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let page = self
            .domain
            .list_failed_mails(&caller, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListFailedMailsResponse {
            mails: page.items.iter().map(mail_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn retry_mail(
        &self,
        request: Request<pb::RetryMailRequest>,
    ) -> Result<Response<pb::RetryMailResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let mail_id = id("id", &request.get_ref().id).into_status()?;
        let mail = self.domain.retry_mail(&caller, mail_id).await.into_status()?;
        Ok(Response::new(pb::RetryMailResponse {
            mail: Some(mail_to_pb(&mail)),
        }))
    }
}
