//! Creating users (R-USR-1, R-ORG-2, R-ORG-4): CreateUser and the one
//! `insert_user` every way of making a user goes through.

use super::*;
use crate::services::activation::Earlier;

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
    /// transaction: CreateUser commits one, the import job many.
    pub(crate) async fn create_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        checked: CheckedNewUser,
    ) -> DomainResult<CreatedUser> {
        let CheckedNewUser {
            roles: requested_roles,
            wants_admin,
            first_name,
            surname,
            email,
            username,
            cpr,
            birth_date,
            new,
        } = checked;
        let org_id = new.organisation_id;
        let legacy = new.legacy_id.is_some();
        // Rules that count administrators need the organisation locked for the
        // whole transaction; a plain user only needs a licence, which
        // `take_licence` takes as the last statement, so creates in one
        // organisation hold its row lock only while they commit.
        let counts_admins = caller.is_operator() || wants_admin;
        let org = if counts_admins {
            lock_organisation(txn, org_id).await?
        } else {
            read_organisation(txn, org_id).await?
        };
        if let Some(request_id) = &new.request_id
            && let Some(existing) = user::Entity::find()
                .filter(user::Column::OrganisationId.eq(org_id))
                .filter(user::Column::CreateRequestId.eq(request_id.as_str()))
                .one(txn)
                .await?
        {
            let user = self.load_user(txn, existing.id).await?;
            authorize(
                caller,
                Action::ReadUser,
                Target::user(org_id, user.id, user.is_administrator(), user.unit_id),
            )?;
            return Ok(CreatedUser {
                user,
                created: false,
                activation_code: None,
            });
        }

        let mut roles = requested_roles;
        if caller.is_operator() {
            // R-ORG-2: the first user an operator creates in an organisation
            // without an administrator becomes its administrator.
            if seat_holders(txn, org_id, Role::OrganisationAdmin).await? == 0 {
                roles.extend([Role::OrganisationAdmin, Role::UserAdmin]);
                roles = normalise_roles(roles);
            } else if !wants_admin {
                return Err(DomainError::denied(
                    "operators create an organisation's administrators only; its user administrators create the other users",
                ));
            }
        }
        // A legacy user arrives deactivated for good: they hold no seat
        // (R-ORG-4) until reactivated, which checks the seats then.
        if !legacy {
            ensure_licence_free(&org)?;
            if roles.contains(&Role::OrganisationAdmin) {
                self.ensure_admin_seat_free(txn, &org).await?;
            }
        }
        if let Some(unit) = new.unit_id {
            self.unit_in_organisation(txn, unit, org_id, "unit_id").await?;
        }
        // E-mail, username and CPR uniqueness: the partial unique indexes
        // refuse a duplicate at the INSERT, with the rule's own reason.
        let cpr_hash = cpr.as_ref().map(|c| self.vault.lookup_hash(c));

        let now = now_millis();
        let id = Uuid::now_v7();
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
            id: Set(id),
            organisation_id: Set(org_id),
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
            phone: Set(new.phone.clone()),
            language: Set(language.to_string()),
            external_ids: Set(json_list(&new.external_ids)),
            identification_means: Set(json_list(&new.identification_means)),
            signing_right: Set(new.signing_right),
            signs_with_organisation_certificate: Set(false),
            anonymous: Set(new.anonymous),
            email_verified: Set(false),
            pending_email: Set(None),
            legacy_id: Set(new.legacy_id.clone()),
            deactivated_until: Set(None),
            activated_at: Set(new.service_account.then_some(now)),
            service_account: Set(new.service_account),
            create_request_id: Set(new.request_id.clone()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let (row, activation_code) = self
            .insert_user(
                txn,
                row,
                &roles,
                &org,
                !new.suppress_activation && !legacy && !new.service_account,
            )
            .await?;

        let mut changes = Vec::new();
        diff(&mut changes, "state", "", state);
        diff(&mut changes, "first_name", "", &row.first_name);
        diff(&mut changes, "surname", "", &row.surname);
        diff(&mut changes, "email", "", &row.email);
        diff(&mut changes, "username", "", row.username.clone().unwrap_or_default());
        if cpr.is_some() {
            diff(&mut changes, "cpr", "", HIDDEN);
        }
        diff(
            &mut changes,
            "birth_date",
            "",
            row.birth_date.clone().unwrap_or_default(),
        );
        diff(&mut changes, "roles", "", json_list(&roles));
        diff(&mut changes, "anonymous", false, row.anonymous);
        diff(&mut changes, "service_account", false, row.service_account);
        diff(&mut changes, "legacy_id", "", row.legacy_id.clone().unwrap_or_default());
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(id),
                activity: Activity::UserCreated,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        if !legacy {
            take_licence(txn, org_id).await?;
        }
        Ok(CreatedUser {
            user: user_from_row(row, roles, &self.vault)?,
            created: true,
            activation_code,
        })
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
        let row = user::Entity::insert(row).exec_with_returning(txn).await?;
        write_roles(txn, row.id, org.id, roles).await?;
        let code = match (start_activation, row.cpr_hash.is_some()) {
            (false, _) => None,
            (true, true) => {
                self.issue_activation_link(txn, &row, &org.name, Earlier::NoneYet)
                    .await?;
                None
            }
            (true, false) => Some(self.issue_activation_code(txn, &row, Earlier::NoneYet).await?),
        };
        Ok((row, code))
    }
}
