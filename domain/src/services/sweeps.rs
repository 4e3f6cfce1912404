//! Scheduled work the worker triggers. Each sweep is set-based: one UPDATE per
//! batch, with its history rows inserted in the same transaction.

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::DomainResult;
use crate::model::*;
use crate::persistence::entities::{password_credential, user};
use crate::persistence::history::{NewEvent, Subject, diff, to_row};
use crate::persistence::is_postgres;
use crate::policy::Caller;
use crate::services::users::opt_time;
use crate::services::{apply_licence_delta, licence_delta};

impl Domain {
    /// Of `ids`, the people whose login lock the end of their timed
    /// deactivation lifts. ReactivateUser lifts only a lock its caller may
    /// lift by hand; the sweep has no caller, and a user administrator may
    /// set the end (DeactivateUser with `until`) of an administrator or of
    /// someone who delegates, whose lock only an organisation administrator
    /// or the operator lifts (R-ACC-6). Set a minute ahead, the sweep lifted
    /// what its setter could not. So it lifts everyone else's only.
    async fn locks_the_sweep_may_lift(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        ids: &[Uuid],
        now: Millis,
    ) -> DomainResult<Vec<Uuid>> {
        let locked: Vec<Uuid> = password_credential::Entity::find()
            .select_only()
            .column(password_credential::Column::UserId)
            .filter(password_credential::Column::UserId.is_in(ids.to_vec()))
            .filter(crate::services::login::has_a_login_lock(now))
            .into_tuple()
            .all(txn)
            .await?;
        if locked.is_empty() {
            return Ok(locked);
        }
        let people = user::Entity::find()
            .filter(user::Column::Id.is_in(locked.clone()))
            .all(txn)
            .await?;
        let roles = crate::services::users::roles_of(txn, &locked).await?;
        let mut per_organisation = std::collections::BTreeMap::<Uuid, Vec<&user::Model>>::new();
        for person in &people {
            per_organisation.entry(person.organisation_id).or_default().push(person);
        }
        let mut liftable = Vec::new();
        for (organisation_id, people) in per_organisation {
            let delegating = crate::services::access::delegating_among(self, txn, organisation_id, &people).await?;
            liftable.extend(
                people
                    .iter()
                    .filter(|person| !delegating.contains(&person.id))
                    .filter(|person| {
                        !roles
                            .get(&person.id)
                            .is_some_and(|roles| roles.iter().any(|role| role.is_administrator()))
                    })
                    .map(|person| person.id),
            );
        }
        Ok(liftable)
    }

    /// R-USR-4: ends every timed deactivation whose `until` has passed, `batch`
    /// users per transaction. Returns how many users came back.
    ///
    /// On PostgreSQL each batch is claimed with `FOR UPDATE SKIP LOCKED`, so
    /// several workers sweeping at once split the users between them, and
    /// one sweep runs two lanes side by side: a batch is mostly database
    /// work, and one connection keeps one core of the database busy at most.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn reactivate_due_users(&self, now: Millis, batch: u64) -> DomainResult<u64> {
        let caller = Caller::system("timed-reactivation");
        let total = if is_postgres(&self.db) {
            let (a, b) = tokio::join!(
                self.reactivate_due_lane(now, batch, &caller),
                self.reactivate_due_lane(now, batch, &caller)
            );
            a? + b?
        } else {
            self.reactivate_due_lane(now, batch, &caller).await?
        };
        if total > 0 {
            tracing::info!(reactivated = total, "timed deactivations ended");
        }
        Ok(total)
    }

    /// Reactivates due users batch by batch until none is left to claim.
    async fn reactivate_due_lane(&self, now: Millis, batch: u64, caller: &Caller) -> DomainResult<u64> {
        let mut total = 0;
        loop {
            let txn = crate::persistence::begin_write(&self.db).await?;
            let mut due = user::Entity::find()
                .select_only()
                .columns([
                    user::Column::Id,
                    user::Column::OrganisationId,
                    user::Column::DeactivatedUntil,
                    user::Column::ActivatedAt,
                ])
                .filter(user::Column::State.eq(UserState::Deactivated.as_str()))
                .filter(user::Column::DeactivatedUntil.lte(now))
                .order_by_asc(user::Column::DeactivatedUntil)
                .limit(batch);
            if is_postgres(&txn) {
                due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
            let due: Vec<(Uuid, Uuid, Option<i64>, Option<i64>)> = due.into_tuple().all(&txn).await?;
            if due.is_empty() {
                txn.commit().await?;
                break;
            }
            let ids: Vec<Uuid> = due.iter().map(|d| d.0).collect();
            // Users who never activated go back to waiting for activation.
            user::Entity::update_many()
                .col_expr(
                    user::Column::State,
                    Expr::case(
                        Expr::col(user::Column::ActivatedAt).is_null(),
                        UserState::PendingActivation.as_str(),
                    )
                    .finally(UserState::Active.as_str())
                    .into(),
                )
                .col_expr(user::Column::DeactivatedUntil, Expr::value(Option::<i64>::None))
                .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::Id.is_in(ids.clone()))
                .exec(&txn)
                .await?;
            let events = due.iter().map(|(id, org, until, activated)| {
                let state = if activated.is_some() {
                    UserState::Active
                } else {
                    UserState::PendingActivation
                };
                let mut changes = Vec::new();
                diff(&mut changes, "state", UserState::Deactivated, state);
                diff(&mut changes, "deactivated_until", opt_time(*until), "");
                to_row(NewEvent {
                    organisation_id: Some(*org),
                    subject: Subject::User(*id),
                    activity: Activity::UserReactivated,
                    caller,
                    at: now,
                    changes,
                })
            });
            // Back from a timed deactivation is deactivate-then-activate:
            // the login lock goes, as with ReactivateUser (seed 001), where
            // the sweep may lift it.
            let liftable = self.locks_the_sweep_may_lift(&txn, &ids, now).await?;
            let unlocked = crate::services::login::lift_login_locks(&txn, liftable, now).await?;
            let unlock_events = due
                .iter()
                .filter(|(id, ..)| unlocked.contains(id))
                .map(|(id, org, ..)| to_row(crate::services::login::login_unlocked(*org, *id, caller, now)));
            // Up to two events per user: in statements under SQLite's limit
            // on bound values, whatever the batch size.
            crate::persistence::insert_in_chunks(&txn, events.chain(unlock_events).collect()).await?;
            // The licence rule of every reactivation (R-ORG-4): a timed
            // deactivation kept its seat for the return, so these returns
            // take none and no limit can be exceeded. Should the rule ever
            // change, the counters follow it here; organisations in id order,
            // so two sweeps never wait on each other in opposite orders.
            let mut per_organisation = std::collections::BTreeMap::<Uuid, i64>::new();
            for (_, org, until, activated) in &due {
                let after = if activated.is_some() {
                    UserState::Active
                } else {
                    UserState::PendingActivation
                };
                *per_organisation.entry(*org).or_default() +=
                    licence_delta(holds_seat(UserState::Deactivated, *until), holds_seat(after, None));
            }
            for (org, delta) in per_organisation {
                apply_licence_delta(&txn, org, delta).await?;
            }
            txn.commit().await?;
            total += due.len() as u64;
            if (due.len() as u64) < batch {
                break;
            }
        }
        Ok(total)
    }
}

impl Domain {
    /// Claims `name`'s current period (`period_ms` long) for `worker`. True for
    /// exactly one caller per period across every replica: the primary key
    /// (name, period_start) admits one row.
    pub async fn claim_sweep_period(
        &self,
        name: &str,
        period_ms: i64,
        now: Millis,
        worker: &str,
    ) -> DomainResult<bool> {
        use crate::persistence::entities::sweep_run;
        use sea_orm::ActiveValue::Set;
        let period_start = now - now.rem_euclid(std::cmp::Ord::max(period_ms, 1));
        let inserted = sweep_run::Entity::insert(sweep_run::ActiveModel {
            name: Set(name.to_owned()),
            period_start: Set(period_start),
            claimed_by: Set(worker.to_owned()),
            claimed_at: Set(now),
        })
        .exec_without_returning(&self.db)
        .await;
        match inserted {
            Ok(_) => {
                // Old periods only matter while they are current; keep a day.
                sweep_run::Entity::delete_many()
                    .filter(sweep_run::Column::Name.eq(name))
                    .filter(sweep_run::Column::PeriodStart.lt(now - 86_400_000))
                    .exec(&self.db)
                    .await?;
                Ok(true)
            }
            Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
