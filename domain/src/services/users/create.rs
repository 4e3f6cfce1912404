//! Creating users (R-USR-1, R-ORG-2, R-ORG-4): CreateUser and the one
//! `insert_user` every way of making a user goes through.

use std::collections::HashSet;

use sea_orm::TryIntoModel;
use sea_orm::sea_query::OnConflict;

use super::*;
use crate::error::unique_rule_refusal;
use crate::services::activation::Earlier;
use crate::services::organisations::no_such_unit;
use crate::services::{licence_limit_reached, take_licences};

/// Why an operator may not appoint (or hand out the activation code of) an
/// administrator of an organisation that has an active one.
pub(crate) const OPERATOR_APPOINTS_ONLY_WITHOUT_ADMIN: &str = "this organisation has an active administrator, who appoints its administrators and hands out their activation; an operator does so only while an organisation has none (nobody, operator included, may obtain a credential that acts as another person)";

impl Domain {
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> DomainResult<CreatedUser> {
        // Bad input is refused before a write transaction (on SQLite: the
        // database's one writer lock) is opened.
        let checked = self.check_new_user(caller, new)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let created = self.create_user_in(&txn, caller, checked).await?;
        txn.commit().await?;
        Ok(created)
    }

    /// CreateUser's authorisation and field rules, with no database: the
    /// input in its stored form, or every violation at once.
    pub(crate) fn check_new_user(&self, caller: &Caller, new: NewUser) -> DomainResult<CheckedNewUser> {
        let org_id = new.organisation_id;
        let requested_roles = normalise_roles(new.roles.clone());
        let wants_admin = requested_roles.iter().any(|r| r.is_administrator());
        // Operators may only create administrators; whether this one is the
        // organisation's first (and so becomes its administrator) is decided
        // below, under the organisation lock.
        // A scoped admin level creates users within its subtree only.
        authorize(caller, Action::CreateUser, Target::new_user(org_id, new.unit_id))?;
        if !caller.is_operator() && requested_roles != [Role::User] {
            authorize(caller, Action::ChangeRoles, Target::organisation(org_id))?;
        }

        let mut v = Violations::default();
        let (first_name, surname, email) =
            check_identity_fields(&mut v, "", Some(&new.first_name), Some(&new.surname), Some(&new.email));
        let username = new.username.as_deref().map(nfc);
        if let Some(username) = &username {
            v.check("username", validate::username(username));
        }
        let mut birth_date = None;
        // What a service account (R-ACC-5) is not: a person. It holds no
        // roles (people administer; accounts are shared), proves no
        // identity and is never anonymous.
        if new.service_account {
            check_service_account(
                &mut v,
                "",
                "cpr",
                ServiceAccountFields {
                    holds_roles: requested_roles != [Role::User],
                    has_cpr: new.cpr.is_some() || new.birth_date.is_some(),
                    has_identification_means: !new.identification_means.is_empty(),
                    signing_right: new.signing_right,
                },
            );
            if new.anonymous {
                v.add("anonymous", "a service account is not anonymous");
            }
        }
        let cpr = match (&new.cpr, &new.birth_date) {
            // A service account proves no identity: it activates nothing.
            (None, None) if new.service_account => None,
            (Some(_), Some(_)) => {
                v.add("cpr", "give either a CPR number or a birth date, not both");
                None
            }
            (None, None) => {
                v.add("cpr", "a CPR number or a birth date is required");
                None
            }
            (Some(cpr), None) => match validate::normalise_cpr(cpr) {
                Ok(cpr) => Some(cpr),
                Err(e) => {
                    v.add("cpr", e);
                    None
                }
            },
            (None, Some(date)) => {
                birth_date = check_birth_date(&mut v, "birth_date", date);
                None
            }
        };
        if let Some(phone) = &new.phone {
            v.check("phone", validate::phone(phone));
        }
        v.check("external_ids", validate::external_ids(&new.external_ids));
        if let Some(id) = &new.request_id {
            v.check("request_id", validate::request_id(id));
        }
        v.into_result()?;
        let (Some(first_name), Some(surname), Some(email)) = (first_name, surname, email) else {
            return Err(DomainError::Internal("a checked identity field is missing".into()));
        };
        Ok(CheckedNewUser {
            roles: requested_roles,
            wants_admin,
            first_name,
            surname,
            email,
            username,
            cpr,
            birth_date,
            new,
        })
    }

    /// CreateUser's rules that need the database, and its writes (user,
    /// roles, activation, history, licence), inside the caller's
    /// transaction: CreateUser and a join request's approval commit one.
    pub(crate) async fn create_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        checked: CheckedNewUser,
    ) -> DomainResult<CreatedUser> {
        self.create_users_in(txn, caller, vec![checked], 0)
            .await?
            .pop()
            .unwrap_or_else(|| Err(DomainError::Internal("a create of one user answered nothing".into())))
    }

    /// The same rules and writes for many users of one organisation in a
    /// few statements (the import job's batches): one answer per user, in
    /// order, as if each had been created alone in that order. A refused
    /// user changes nothing; the outer error is the database's (the caller
    /// rolls back). `admin_seats_taken_before`: administrator seats to
    /// count as taken beyond the stored ones (a validate-only import's
    /// earlier batches, rolled back).
    pub(crate) async fn create_users_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        mut users: Vec<CheckedNewUser>,
        admin_seats_taken_before: i64,
    ) -> DomainResult<Vec<DomainResult<CreatedUser>>> {
        let Some(org_id) = users.first().map(|u| u.new.organisation_id) else {
            return Ok(Vec::new());
        };
        if users.iter().any(|u| u.new.organisation_id != org_id) {
            return Err(DomainError::Internal(
                "one create of many users spans organisations".into(),
            ));
        }
        // Rules that count administrators need the organisation locked for the
        // whole transaction, and so does a create of many (its licences are
        // counted once, as read, and taken at the end). A single plain user
        // only needs a licence, which `take_licences` takes as the last
        // statement, so creates in one organisation hold its row lock only
        // while they commit.
        let counts_admins = caller.is_operator() || users.iter().any(|u| u.wants_admin);
        // Whether placing people in units needs the check below (a caller
        // who may not change roles): then under the lock, so a grant to a
        // unit's system group cannot commit between the check and the insert.
        let may_change_roles = crate::services::access::may_change_roles(caller, org_id);
        let checks_placement = !may_change_roles && users.iter().any(|u| u.new.unit_id.is_some());
        // Identification means are checked against the organisation's
        // allowed ones under its lock: a narrowing of them (which takes
        // them from every person holding one) cannot commit in between and
        // miss this person.
        let names_means = users.iter().any(|u| !u.new.identification_means.is_empty());
        let org = if counts_admins || users.len() > 1 || checks_placement || names_means {
            lock_organisation(txn, org_id).await?
        } else {
            read_organisation(txn, org_id).await?
        };
        // A member gives roles as they are under the lock (taken above for
        // every create that gives one): checked only as authenticated, a
        // create went through after a demotion of the caller committed while
        // it waited for the lock. (Operators create administrators by their
        // own rule, which no demotion changes.)
        if !caller.is_operator() && users.iter().any(|u| u.wants_admin) {
            let caller_now = crate::services::access::caller_as_now(self, txn, caller).await?;
            authorize(&caller_now, Action::ChangeRoles, Target::organisation(org_id))?;
        }
        let mut answers: Vec<Option<DomainResult<CreatedUser>>> = (0..users.len()).map(|_| None).collect();

        // A retried request answers with the user it created the first time.
        let request_ids: Vec<Option<String>> = users.iter().map(|u| u.new.request_id.clone()).collect();
        // Who each create asks for, by the key their login compares: a
        // retry names the same person; the same id for another is another
        // request.
        let asked_for: Vec<String> = users
            .iter()
            .map(|u| crate::email::login_key(u.email.as_str()))
            .collect();
        self.answer_retries(txn, caller, org_id, &request_ids, &asked_for, &mut answers)
            .await?;

        if caller.is_operator() {
            // R-ORG-2: the first user an operator creates in an organisation
            // without an administrator becomes its administrator.
            let mut has_admin = seat_holders(txn, org_id, Role::OrganisationAdmin).await? > 0;
            // R-AUTH-1, R-ACC-6: an operator who appointed administrators at
            // will could appoint one they sign in as (a birth-date person's
            // activation code comes back to them, a CPR person's link goes
            // to the address they typed) and see every user. So an
            // operator appoints one only while the organisation has no
            // active administrator (its first, or to recover it when its
            // administrators are all gone); after that, its
            // organisation administrators appoint each other.
            let has_active_admin = has_admin && active_role_holders(txn, org_id, Role::OrganisationAdmin).await? > 0;
            for (answer, user) in answers.iter_mut().zip(users.iter_mut()) {
                if answer.is_some() {
                    continue;
                }
                if !has_admin && user.new.service_account {
                    // The first user is the organisation's administrator, a
                    // person who activates their login: an account no
                    // person signs in to would be an administrator nobody is.
                    *answer = Some(Err(DomainError::precondition(
                        Reason::ServiceAccount,
                        "the first user of an organisation is its administrator, a person; create them before any service account",
                    )));
                } else if !has_admin {
                    user.roles.extend([Role::OrganisationAdmin, Role::UserAdmin]);
                    user.roles = normalise_roles(std::mem::take(&mut user.roles));
                    has_admin = true;
                } else if !user.wants_admin {
                    *answer = Some(Err(DomainError::denied(
                        "operators create an organisation's administrators only; its user administrators create the other users",
                    )));
                } else if has_active_admin {
                    *answer = Some(Err(DomainError::denied(OPERATOR_APPOINTS_ONLY_WITHOUT_ADMIN)));
                }
            }
        }
        // A legacy user arrives deactivated for good: they hold no seat
        // (R-ORG-4) until reactivated, which checks the seats then.
        let takes_seat = |u: &CheckedNewUser| u.new.legacy_id.is_none();
        let takes_admin_seat = |u: &CheckedNewUser| takes_seat(u) && u.roles.contains(&Role::OrganisationAdmin);
        // The seats as read; a clear early answer before any unit or
        // uniqueness rule. What is free is shared out in order below.
        let mut licences_free = (i64::from(org.licence_count) - org.licences_used).max(0);
        let mut admin_seats_free = if org.max_administrators > 0
            && users
                .iter()
                .zip(&answers)
                .any(|(u, a)| a.is_none() && takes_admin_seat(u))
        {
            let held = seat_holders(txn, org_id, Role::OrganisationAdmin).await? + admin_seats_taken_before;
            Some((i64::from(org.max_administrators) - held).max(0))
        } else {
            None
        };
        // The refusal of a user the free seats cannot take.
        let seat_refusal = |user: &CheckedNewUser, licences_free: i64, admin_seats_free: Option<i64>| {
            if takes_seat(user) && licences_free == 0 {
                Some(licence_limit_reached(&org))
            } else if takes_admin_seat(user) && admin_seats_free == Some(0) {
                Some(max_administrators_reached(&org))
            } else {
                None
            }
        };
        for (answer, user) in answers.iter_mut().zip(&users) {
            if answer.is_none() {
                *answer = seat_refusal(user, licences_free, admin_seats_free).map(Err);
            }
        }

        let unit_ids: Vec<Uuid> = users
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .filter_map(|(u, _)| u.new.unit_id)
            .collect();
        let units = self.units_in_organisation(txn, unit_ids, org_id).await?;
        for (answer, user) in answers.iter_mut().zip(&users) {
            if answer.is_none()
                && let Some(unit) = user.new.unit_id
                && !units.contains(&unit)
            {
                *answer = Some(Err(no_such_unit("unit_id")));
            }
        }
        if names_means {
            let allowed = super::allowed_means(&org)?;
            for (answer, user) in answers.iter_mut().zip(&users) {
                if answer.is_none()
                    && let Some(refusal) = super::means_beyond_allowed(&allowed, &user.new.identification_means)
                {
                    *answer = Some(Err(DomainError::invalid("identification_means", refusal)));
                }
            }
        }
        // R-AUTH-1: placed in a unit whose system group may pass a right on,
        // the new person delegates from the start; their activation (a code
        // to the creator, a link to an address the creator chose) is then
        // handed out only by someone who may change roles.
        if checks_placement {
            let mut delegating_units = HashMap::new();
            for (answer, user) in answers.iter_mut().zip(&users) {
                // A service account delegates nothing (R-ACC-5).
                let (None, Some(unit), false) = (&answer, user.new.unit_id, user.new.service_account) else {
                    continue;
                };
                let delegating = match delegating_units.get(&unit) {
                    Some(known) => *known,
                    None => {
                        let groups =
                            crate::services::access::groups::system_groups_over(self, txn, org_id, unit).await?;
                        let found = crate::services::access::groups::any_passes_rights_on(txn, groups).await?;
                        delegating_units.insert(unit, found);
                        found
                    }
                };
                if delegating {
                    *answer = Some(Err(DomainError::denied(
                        "a person placed in this unit may pass rights on (its system group holds such a right), so how they sign in is set up only by someone who may change roles (an organisation administrator)",
                    )));
                }
            }
        }

        let cpr_hashes: Vec<Option<String>> = users
            .iter()
            .map(|u| u.cpr.as_ref().map(|c| self.vault.lookup_hash(c)))
            .collect();
        // E-mail, username and CPR uniqueness, against live users and the
        // earlier users of this create (the first one keeps the value), is
        // looked up first only when the seats do not go round: a user refused
        // at the INSERT must not hold a seat a later one could have had.
        // Otherwise (one user alone, or a batch within its licences) the
        // INSERT is the check: it leaves a clashing row out, and
        // `insert_users` answers it with the rule it broke.
        let wanted = |seat: &dyn Fn(&CheckedNewUser) -> bool| {
            users
                .iter()
                .zip(&answers)
                .filter(|(u, a)| a.is_none() && seat(u))
                .count() as i64
        };
        let contested = wanted(&takes_seat) > licences_free
            || admin_seats_free.is_some_and(|free| wanted(&takes_admin_seat) > free);
        if contested {
            let keys: Vec<UniqueKeys> = users
                .iter()
                .zip(&cpr_hashes)
                .map(|(u, cpr_hash)| UniqueKeys {
                    email: u.email.key().to_owned(),
                    username: u.username.as_deref().map(normalise::key),
                    cpr_hash: cpr_hash.clone(),
                })
                .collect();
            let pending: Vec<&UniqueKeys> = keys
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|(k, _)| k)
                .collect();
            let mut taken = live_keys(txn, org_id, &pending).await?;
            for (answer, keys) in answers.iter_mut().zip(&keys) {
                if answer.is_some() {
                    continue;
                }
                match taken.refusal(keys) {
                    Some(refusal) => *answer = Some(Err(refusal)),
                    None => taken.claim(keys),
                }
            }
        }

        // What is free, shared out in order: a refused user takes nothing.
        for (answer, user) in answers.iter_mut().zip(&users) {
            if answer.is_some() {
                continue;
            }
            if let Some(refusal) = seat_refusal(user, licences_free, admin_seats_free) {
                *answer = Some(Err(refusal));
                continue;
            }
            licences_free -= i64::from(takes_seat(user));
            if takes_admin_seat(user) {
                admin_seats_free = admin_seats_free.map(|free| free - 1);
            }
        }

        let now = now_millis();
        let mut to_insert = Vec::new();
        let mut created_here = Vec::new();
        for (index, ((user, cpr_hash), answer)) in users.into_iter().zip(cpr_hashes).zip(&answers).enumerate() {
            if answer.is_some() {
                continue;
            }
            let start_activation =
                !user.new.suppress_activation && user.new.legacy_id.is_none() && !user.new.service_account;
            let (takes_seat, has_cpr, roles) = (takes_seat(&user), user.cpr.is_some(), user.roles.clone());
            let (row, state) = self.new_user_row(user, cpr_hash, now);
            to_insert.push(UserToInsert {
                row,
                roles: roles.clone(),
                start_activation,
            });
            created_here.push(Made {
                index,
                takes_seat,
                has_cpr,
                roles,
                state,
            });
        }
        let inserted = self.insert_users(txn, &org, to_insert).await?;
        let mut events = Vec::new();
        let mut seats_taken = 0;
        let (mut refused_at_insert, mut refusals) = (Vec::new(), Vec::new());
        for (made, result) in created_here.into_iter().zip(inserted) {
            let (row, activation_code) = match result {
                Ok(inserted) => inserted,
                Err(refusal) => {
                    refused_at_insert.push(made.index);
                    refusals.push(refusal);
                    continue;
                }
            };
            seats_taken += i64::from(made.takes_seat);
            events.push(NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(row.id),
                activity: Activity::UserCreated,
                caller,
                at: now,
                changes: creation_changes(&row, made.state, made.has_cpr, &made.roles),
            });
            answers[made.index] = Some(user_from_row(row, made.roles, &self.vault).map(|user| CreatedUser {
                user,
                created: true,
                activation_code,
            }));
        }
        // A twin of a retry (the same request id, sent again before the
        // first had answered) met the first one's row at its INSERT, which
        // waited for it to commit: the first one's user is the answer, not
        // the e-mail clash.
        // (Those refused at the INSERT are the only ones unanswered here.)
        if refused_at_insert.iter().any(|&index| request_ids[index].is_some()) {
            self.answer_retries(txn, caller, org_id, &request_ids, &asked_for, &mut answers)
                .await?;
        }
        for (index, refusal) in refused_at_insert.into_iter().zip(refusals) {
            answers[index].get_or_insert(Err(refusal));
        }
        history::record_all(txn, events).await?;
        if seats_taken > 0 {
            take_licences(txn, org_id, seats_taken).await?;
        }
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| DomainError::Internal("a user of a create got no answer".into())))
            .collect()
    }

    /// Answers each user still unanswered whose request id an earlier
    /// create of this organisation used with the user that create made (a
    /// retry changes nothing), as far as the caller may read it.
    async fn answer_retries(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        org_id: Uuid,
        request_ids: &[Option<String>],
        asked_for: &[String],
        answers: &mut [Option<DomainResult<CreatedUser>>],
    ) -> DomainResult<()> {
        let asked: Vec<&str> = request_ids
            .iter()
            .zip(answers.iter())
            .filter(|(_, answer)| answer.is_none())
            .filter_map(|(id, _)| id.as_deref())
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let earlier: HashMap<String, Uuid> = user::Entity::find()
            .select_only()
            .columns([user::Column::CreateRequestId, user::Column::Id])
            .filter(user::Column::OrganisationId.eq(org_id))
            .filter(user::Column::CreateRequestId.is_in(asked))
            .into_tuple::<(String, Uuid)>()
            .all(txn)
            .await?
            .into_iter()
            .collect();
        for ((answer, request_id), asked) in answers.iter_mut().zip(request_ids).zip(asked_for) {
            let Some(&id) = request_id.as_ref().and_then(|r| earlier.get(r)) else {
                continue;
            };
            if answer.is_some() {
                continue;
            }
            let user = self.load_user(txn, id).await?;
            let readable = authorize(
                caller,
                Action::ReadUser,
                Target::user(org_id, user.id, user.is_administrator(), user.unit_id),
            );
            // Only a caller who may read the user learns that the id made
            // someone else. The address the first create gave counts, not
            // only today's: a retry after an address change still names
            // the same person.
            let same_person = match readable {
                Err(denied) => Err(denied),
                Ok(()) if crate::email::login_key(&user.email) == *asked => Ok(()),
                Ok(()) => {
                    // The address the first create gave, as its event keeps it.
                    let first = history::recorded_change(
                        txn,
                        Subject::User(user.id),
                        Activity::UserCreated,
                        history::Which::First,
                        "email",
                    )
                    .await?;
                    crate::services::ensure_same_request(
                        first.map(|a| crate::email::login_key(&a)).as_deref(),
                        asked,
                        "user",
                    )
                }
            };
            *answer = Some(same_person.map(|()| CreatedUser {
                user,
                created: false,
                activation_code: None,
            }));
        }
        Ok(())
    }

    /// A checked new user as the row to insert, and the state it starts in.
    fn new_user_row(
        &self,
        checked: CheckedNewUser,
        cpr_hash: Option<String>,
        now: Millis,
    ) -> (user::ActiveModel, UserState) {
        let CheckedNewUser {
            first_name,
            surname,
            email,
            username,
            cpr,
            birth_date,
            new,
            ..
        } = checked;
        let legacy = new.legacy_id.is_some();
        let language = new.language.unwrap_or(Language::Da);
        let state = if legacy {
            UserState::Deactivated
        } else if new.service_account {
            // Nobody activates an account that is no one's: it is active at
            // once, and takes its licence like any active user.
            UserState::Active
        } else {
            UserState::PendingActivation
        };
        let row = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(new.organisation_id),
            state: Set(state.to_string()),
            search_text: Set(normalise::search_text(&first_name, &surname, email.as_str())),
            first_name: Set(first_name),
            surname: Set(surname),
            email: Set(email.as_str().to_owned()),
            email_key: Set(Some(email.key().to_owned())),
            username_key: Set(username.as_deref().map(normalise::key)),
            username: Set(username),
            cpr_hash: Set(cpr_hash),
            cpr_ciphertext: Set(cpr.as_ref().map(|c| self.vault.encrypt(c))),
            birth_date: Set(birth_date),
            unit_id: Set(new.unit_id),
            phone: Set(new.phone),
            language: Set(language.to_string()),
            external_ids: Set(json_list(&new.external_ids)),
            identification_means: Set(json_list(&new.identification_means)),
            signing_right: Set(new.signing_right),
            signs_with_organisation_certificate: Set(false),
            anonymous: Set(new.anonymous),
            email_verified: Set(false),
            pending_email: Set(None),
            legacy_id: Set(new.legacy_id),
            deactivated_until: Set(None),
            activated_at: Set(new.service_account.then_some(now)),
            service_account: Set(new.service_account),
            create_request_id: Set(new.request_id),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        };
        (row, state)
    }

    /// The one way a user comes to exist (CreateUser, the anonymity
    /// re-creation, the import job): inserts the row and its roles and, when
    /// asked, starts its activation (a mailed link for a CPR user, else a
    /// code returned once), all in the caller's transaction. Licences are the
    /// caller's: a create takes one last, a re-creation frees the old one.
    /// The row is new (a new id), so it holds no activation secrets to end.
    pub(crate) async fn insert_user(
        &self,
        txn: &DatabaseTransaction,
        row: user::ActiveModel,
        roles: &[Role],
        org: &organisation::Model,
        start_activation: bool,
    ) -> DomainResult<(user::Model, Option<String>)> {
        let one = UserToInsert {
            row,
            roles: roles.to_vec(),
            start_activation,
        };
        self.insert_users(txn, org, vec![one])
            .await?
            .pop()
            .unwrap_or_else(|| Err(DomainError::Internal("an insert of one user answered nothing".into())))
    }

    /// `insert_user` for many rows in a few statements. A row whose e-mail,
    /// username or CPR number a live user holds (a parallel write got there
    /// first) is not inserted and answers with the rule's refusal.
    async fn insert_users(
        &self,
        txn: &DatabaseTransaction,
        org: &organisation::Model,
        users: Vec<UserToInsert>,
    ) -> DomainResult<Vec<DomainResult<(user::Model, Option<String>)>>> {
        let mut models = Vec::with_capacity(users.len());
        for user in &users {
            models.push(user.row.clone().try_into_model()?);
        }
        let mut inserted = HashSet::with_capacity(users.len());
        let per_statement = crate::persistence::rows_per_statement::<user::Entity>();
        for chunk in users.chunks(per_statement) {
            let ids = user::Entity::insert_many(chunk.iter().map(|u| u.row.clone()))
                .on_conflict(OnConflict::new().do_nothing().to_owned())
                .exec_with_returning_keys(txn)
                .await?;
            inserted.extend(ids);
        }
        let roles: Vec<user_role::ActiveModel> = users
            .iter()
            .zip(&models)
            .filter(|(_, row)| inserted.contains(&row.id))
            .flat_map(|(user, row)| role_rows(row.id, org.id, &user.roles))
            .collect();
        crate::persistence::insert_in_chunks(txn, roles).await?;

        let missed: Vec<UniqueKeys> = models
            .iter()
            .filter(|row| !inserted.contains(&row.id))
            .map(UniqueKeys::of_row)
            .collect();
        let taken = if missed.is_empty() {
            LiveKeys::default()
        } else {
            live_keys(txn, org.id, &missed.iter().collect::<Vec<_>>()).await?
        };
        let mut answers = Vec::with_capacity(users.len());
        for (user, row) in users.into_iter().zip(models) {
            if !inserted.contains(&row.id) {
                answers.push(Err(taken
                    .refusal(&UniqueKeys::of_row(&row))
                    .unwrap_or_else(|| unique_rule_refusal(Reason::AlreadyExists))));
                continue;
            }
            let code = match (user.start_activation, row.cpr_hash.is_some()) {
                (false, _) => None,
                (true, true) => {
                    self.issue_activation_link(txn, &row, &org.name, Earlier::NoneYet)
                        .await?;
                    None
                }
                (true, false) => Some(self.issue_activation_code(txn, &row, Earlier::NoneYet).await?.0),
            };
            answers.push(Ok((row, code)));
        }
        Ok(answers)
    }
}

/// A user of a create that got as far as its INSERT.
struct Made {
    /// Where it stands among the users asked for.
    index: usize,
    takes_seat: bool,
    has_cpr: bool,
    roles: Vec<Role>,
    state: UserState,
}

/// A user row about to be inserted, its roles, and whether its activation
/// starts now.
pub(crate) struct UserToInsert {
    row: user::ActiveModel,
    roles: Vec<Role>,
    start_activation: bool,
}

/// What a new user's history event says changed.
fn creation_changes(row: &user::Model, state: UserState, has_cpr: bool, roles: &[Role]) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    diff(&mut changes, "state", "", state);
    diff(&mut changes, "first_name", "", &row.first_name);
    diff(&mut changes, "surname", "", &row.surname);
    diff(&mut changes, "email", "", &row.email);
    diff(&mut changes, "username", "", row.username.clone().unwrap_or_default());
    if has_cpr {
        diff(&mut changes, "cpr", "", HIDDEN);
    }
    diff(
        &mut changes,
        "birth_date",
        "",
        row.birth_date.clone().unwrap_or_default(),
    );
    diff(&mut changes, "roles", "", json_list(roles));
    diff(&mut changes, "anonymous", false, row.anonymous);
    diff(&mut changes, "service_account", false, row.service_account);
    diff(&mut changes, "legacy_id", "", row.legacy_id.clone().unwrap_or_default());
    changes
}

/// The values the partial unique indexes of users keep unique: the e-mail
/// address and CPR number within an organisation, the username everywhere.
struct UniqueKeys {
    email: String,
    username: Option<String>,
    cpr_hash: Option<String>,
}

impl UniqueKeys {
    fn of_row(row: &user::Model) -> Self {
        Self {
            email: row.email_key.clone().unwrap_or_default(),
            username: row.username_key.clone(),
            cpr_hash: row.cpr_hash.clone(),
        }
    }
}

/// Which of some keys live users hold.
#[derive(Default)]
struct LiveKeys {
    emails: HashSet<String>,
    usernames: HashSet<String>,
    cpr_hashes: HashSet<String>,
}

impl LiveKeys {
    /// The refusal of the first rule these keys break, in the order
    /// e-mail, username, CPR number.
    fn refusal(&self, keys: &UniqueKeys) -> Option<DomainError> {
        if self.emails.contains(&keys.email) {
            Some(unique_rule_refusal(Reason::EmailTaken))
        } else if keys.username.as_ref().is_some_and(|u| self.usernames.contains(u)) {
            Some(unique_rule_refusal(Reason::UsernameTaken))
        } else if keys.cpr_hash.as_ref().is_some_and(|c| self.cpr_hashes.contains(c)) {
            Some(unique_rule_refusal(Reason::CprTaken))
        } else {
            None
        }
    }

    /// Counts a new user's keys as held.
    fn claim(&mut self, keys: &UniqueKeys) {
        self.emails.insert(keys.email.clone());
        self.usernames.extend(keys.username.clone());
        self.cpr_hashes.extend(keys.cpr_hash.clone());
    }
}

/// The predicate of the partial unique indexes of users.
const LIVE_USER: &str = "state <> 'DELETED'";

/// How many users one uniqueness look-up asks about (three lists of bound
/// values each).
const KEYS_PER_LOOKUP: usize = 2_000;

/// The keys among `keys` that live (not deleted) users hold: per couple of
/// thousand users one look-up per key, each a plain IN list on its partial
/// unique index (one query ORing the three kept PostgreSQL from the
/// indexes: it filtered every user of the organisation, per batch).
async fn live_keys(db: &impl ConnectionTrait, org_id: Uuid, keys: &[&UniqueKeys]) -> DomainResult<LiveKeys> {
    let mut taken = LiveKeys::default();
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let emails = chunk.iter().map(|k| k.email.as_str());
        let usernames = chunk.iter().filter_map(|k| k.username.as_deref());
        let cpr_hashes = chunk.iter().filter_map(|k| k.cpr_hash.as_deref());
        taken
            .emails
            .extend(held(db, user::Column::EmailKey, Some(org_id), emails).await?);
        taken
            .cpr_hashes
            .extend(held(db, user::Column::CprHash, Some(org_id), cpr_hashes).await?);
        taken
            .usernames
            .extend(held(db, user::Column::UsernameKey, None, usernames).await?);
    }
    Ok(taken)
}

/// Which of `values` live users hold in `column` (within the
/// organisation, when given).
async fn held<'a>(
    db: &impl ConnectionTrait,
    column: user::Column,
    org_id: Option<Uuid>,
    values: impl Iterator<Item = &'a str>,
) -> DomainResult<Vec<String>> {
    let values: Vec<&str> = values.collect();
    if values.is_empty() {
        return Ok(Vec::new());
    }
    // The partial indexes' own predicate, as a literal: with the state as a
    // bound value PostgreSQL's generic plan (from the sixth batch on: the
    // statement text repeats) cannot prove the index applies, and scans.
    let mut query = user::Entity::find()
        .select_only()
        .column(column)
        .filter(Expr::cust(LIVE_USER))
        .filter(column.is_in(values));
    if let Some(org_id) = org_id {
        query = query.filter(user::Column::OrganisationId.eq(org_id));
    }
    Ok(query
        .into_tuple::<Option<String>>()
        .all(db)
        .await?
        .into_iter()
        .flatten()
        .collect())
}
