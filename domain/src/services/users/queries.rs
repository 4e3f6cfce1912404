//! Reading users: one user, lists with filters and keyset pages (R-USR-8),
//! and a user's history (R-USR-7).

use super::*;

impl Domain {
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn get_user(&self, caller: &Caller, id: Uuid) -> DomainResult<User> {
        self.authorized_user(caller, Action::ReadUser, id).await
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_users(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        filter: UserFilter,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<User>> {
        authorize(caller, Action::ListUsers, Target::organisation(organisation_id))?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let mut query = user::Entity::find().filter(user::Column::OrganisationId.eq(organisation_id));
        if let Some(state) = filter.state {
            query = query.filter(user::Column::State.eq(state.as_str()));
        }
        let role_subquery = |roles: Vec<&'static str>| {
            Query::select()
                .column(user_role::Column::UserId)
                .from(user_role::Entity)
                .and_where(user_role::Column::OrganisationId.eq(organisation_id))
                .and_where(user_role::Column::Role.is_in(roles))
                .to_owned()
        };
        if let Some(role) = filter.role {
            query = query.filter(user::Column::Id.in_subquery(role_subquery(vec![role.as_str()])));
        }
        if crate::policy::operator_sees_administrators_only(caller) {
            let admin_roles = Role::ALL
                .iter()
                .filter(|r| r.is_administrator())
                .map(|r| r.as_str())
                .collect();
            query = query.filter(user::Column::Id.in_subquery(role_subquery(admin_roles)));
        }
        // A caller who sees users through levels on units sees those units'
        // users only (R-ACC-2).
        if let crate::policy::ListingScope::Units(units) =
            crate::policy::user_listing_scope(caller, Action::ListUsers, organisation_id)
        {
            query = query.filter(user::Column::UnitId.is_in(units));
        }
        if let Some(unit) = filter.unit_id {
            let units = self.units_of(&self.db, organisation_id).await?;
            if !units.iter().any(|u| u.id == unit) {
                return Err(DomainError::invalid("unit_id", "names no unit of this organisation"));
            }
            query = query.filter(user::Column::UnitId.is_in(subtree(&units, unit)));
        }
        if let Some(group) = filter.group_id {
            query = query.filter(
                crate::services::access::groups::members_condition(self, &self.db, organisation_id, group, "group_id")
                    .await?,
            );
        }
        if let Some(text) = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            if text.chars().count() > 100 {
                return Err(DomainError::invalid("text", "must be at most 100 characters"));
            }
            crate::validate::no_control_characters(text).map_err(|rule| DomainError::invalid("text", rule))?;
            // Every word must appear in a name or the e-mail: in their keys
            // (NFC, Unicode lower case), stored in `search_text` on every
            // write, because SQLite's `lower()` folds ASCII only.
            for word in normalise::key(text).split_whitespace() {
                query = query.filter(crate::persistence::contains_literally(user::Column::SearchText, word));
            }
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            user::Column::Id,
            paging::Order::Ascending,
            &format!("users:{organisation_id}"),
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut roles = roles_of(&self.db, &ids).await?;
        let items = rows
            .into_iter()
            .map(|row| {
                let held = roles.remove(&row.id).unwrap_or_default();
                user_from_row(row, held, &self.vault)
            })
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// R-USR-7: newest first, 200 by default.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_user_history(
        &self,
        caller: &Caller,
        user_id: Uuid,
        query: HistoryQuery,
    ) -> DomainResult<Page<HistoryEvent>> {
        let user = self.authorized_user(caller, Action::ReadUserHistory, user_id).await?;
        let page = self.history_of("USER", user_id, user.organisation_id, query).await?;
        if crate::policy::operator_sees_administrators_only(caller) {
            return self.without_people_but_administrators(page).await;
        }
        Ok(page)
    }

    /// The operator sees an organisation's administrators, not its other
    /// people (R-ACC-6), in history too: an event on an administrator done
    /// by (or on behalf of) someone who is no administrator keeps what
    /// happened and names that person only as `user`. Before, an
    /// administrator's history gave the operator the name and e-mail of
    /// the colleague who acted through a share, or edited them before they
    /// became an administrator.
    async fn without_people_but_administrators(
        &self,
        mut page: Page<HistoryEvent>,
    ) -> DomainResult<Page<HistoryEvent>> {
        let person = |who: &str| who.strip_prefix("user:").and_then(|id| Uuid::parse_str(id).ok());
        let mut people: Vec<Uuid> = page
            .items
            .iter()
            .flat_map(|e| [person(&e.actor), e.on_behalf_of.as_deref().and_then(person)])
            .flatten()
            .collect();
        people.sort_unstable();
        people.dedup();
        let roles = super::roles_of(&self.db, &people).await?;
        let administrator = |id: Uuid| roles.get(&id).is_some_and(|r| r.iter().any(|r| r.is_administrator()));
        for event in &mut page.items {
            if person(&event.actor).is_some_and(|id| !administrator(id)) {
                event.actor = "user".into();
                event.actor_name = String::new();
                event.actor_email = None;
            }
            if let Some(by) = &event.on_behalf_of
                && person(by).is_some_and(|id| !administrator(id))
            {
                event.on_behalf_of = Some("user".into());
            }
        }
        Ok(page)
    }

    /// The history events of one subject (`USER`, `CERTIFICATE`) of
    /// `organisation_id`, newest first, for a caller already allowed to
    /// read them. An event another organisation wrote on the subject (a
    /// user added to that organisation's group, R-ACC-7) keeps what it did
    /// but not who did it: that person's name and e-mail are theirs, and
    /// this organisation cannot read that person otherwise.
    pub(crate) async fn history_of(
        &self,
        subject_kind: &str,
        subject_id: Uuid,
        organisation_id: Uuid,
        query: HistoryQuery,
    ) -> DomainResult<Page<HistoryEvent>> {
        let limit = paging::page_size(query.page_size, 200, 1000)?;
        let list = format!("history:{subject_id}");
        if let (Some(start), Some(end)) = (query.start, query.end)
            && start >= end
        {
            return Err(DomainError::invalid("end_time", "must be after start_time"));
        }
        let mut select = history_event::Entity::find()
            .filter(history_event::Column::SubjectKind.eq(subject_kind))
            .filter(history_event::Column::SubjectId.eq(subject_id));
        if let Some(start) = query.start {
            select = select.filter(history_event::Column::OccurredAt.gte(start));
        }
        if let Some(end) = query.end {
            select = select.filter(history_event::Column::OccurredAt.lt(end));
        }
        if !query.activities.is_empty() {
            // A closed set (the service refuses names and values outside it).
            let names: Vec<&str> = query.activities.iter().map(|a| a.as_str()).collect();
            select = select.filter(history_event::Column::Activity.is_in(names));
        }
        let (rows, next) = paging::keyset(
            &self.db,
            select,
            history_event::Column::Id,
            paging::Order::Descending,
            &list,
            &query.page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|row| {
                    let foreign = row.organisation_id.is_some_and(|o| o != organisation_id);
                    let (actor, actor_name, actor_email) = if foreign {
                        let by = row
                            .organisation_id
                            .map(|o| format!("organisation:{o}"))
                            .unwrap_or_default();
                        (by, String::new(), None)
                    } else {
                        (row.actor, row.actor_name, row.actor_email)
                    };
                    Ok(HistoryEvent {
                        id: row.id,
                        subject_id: row.subject_id,
                        activity: parse(&row.activity)?,
                        actor,
                        actor_name,
                        actor_email,
                        on_behalf_of: row.on_behalf_of,
                        occurred_at: row.occurred_at,
                        changes: changes_from_json(&row.changes),
                    })
                })
                .collect::<DomainResult<Vec<_>>>()?,
            next_page_token: next,
        })
    }
}
