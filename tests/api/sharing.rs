//! Shared access (R-ACC-5, R-ACC-4, R-AUTH-3): a user's own resources shared
//! with a colleague, who then acts as the owner with their own token and
//! the `x-orgadmin-act-as` header; what a share allows and what it never
//! does (administration), two keys, history naming both, and the end of a
//! share taking effect at once.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::reason;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;
use tonic::Code;

both_backends!(
    an_account_is_managed_through_shared_access,
    the_administrator_who_shares_a_users_resources_with_themselves_is_refused,
    a_share_confers_no_administration,
    a_deleted_users_delegation_ends_with_them,
    the_service_account_managed_through_shared_access,
    a_reset_ends_every_api_token_the_person_made,
    a_token_asked_for_as_its_share_ends_is_refused,
    a_level_shares_ordinary_users_resources_only
);

const READ: i32 = pb::ShareAccessLevel::Read as i32;
const EDIT: i32 = pb::ShareAccessLevel::Edit as i32;

async fn share(
    app: &TestApp,
    token: &str,
    owner: &pb::User,
    grantee: &pb::User,
    access: i32,
) -> Result<pb::Share, tonic::Status> {
    app.access()
        .share_access(req(
            token,
            pb::ShareAccessRequest {
                owner_user_id: owner.id.clone(),
                grantee_user_id: grantee.id.clone(),
                access,
            },
        ))
        .await
        .map(|r| r.into_inner().share.expect("share"))
}

async fn get_user_as(app: &TestApp, token: &str, owner: &pb::User, id: &str) -> Result<pb::User, tonic::Status> {
    app.users()
        .get_user(acting_as(
            &owner.id,
            req(token, pb::GetUserRequest { id: id.to_owned() }),
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

/// An API token for `owner_id`, made with `token` acting as them.
async fn token_as(app: &TestApp, token: String, owner_id: String) -> Result<pb::CreateApiTokenResponse, tonic::Status> {
    app.auth()
        .create_api_token(acting_as(
            &owner_id,
            req(
                &token,
                pb::CreateApiTokenRequest {
                    user_id: owner_id.clone(),
                    name: "lønkørsel".into(),
                    ..Default::default()
                },
            ),
        ))
        .await
        .map(|r| r.into_inner())
}

fn preferences() -> pb::UpdateNotificationPreferencesRequest {
    pb::UpdateNotificationPreferencesRequest {
        preferences: vec![pb::NotificationPreference {
            kind: pb::NotificationKind::AnonymityRequest as i32,
            channel: pb::DeliveryChannel::InApp as i32,
        }],
    }
}

/// Someone who knew Finn's password could mint API tokens with it, his own
/// and, through his edit share, the service account's: his password reset
/// (what he does when he fears that) ends them all, and no one else's.
async fn a_reset_ends_every_api_token_the_person_made(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (finn, finn_session) = app.member(&fixture, "Finn", &[]).await;
    let (eva, eva_session) = app.member(&fixture, "Eva", &[]).await;
    let account = app
        .service_account(&ua_token, &fixture.org.id)
        .await
        .user
        .expect("user");
    for grantee in [&finn, &eva] {
        share(&app, &ua_token, &account, grantee, EDIT)
            .await
            .expect("shared to edit");
    }
    let account_token = |session: String| {
        let made = token_as(&app, session, account.id.clone());
        async move { made.await.expect("an edit share makes the account's token").secret }
    };
    let finns_own = app.own_api_token(&finn_session, &finn.id).await;
    let finns_for_account = account_token(finn_session.clone()).await;
    let evas_own = app.own_api_token(&eva_session, &eva.id).await;
    let evas_for_account = account_token(eva_session.clone()).await;

    app.request_password_reset(&finn.email).await;
    let link = app.mailed_token("password_reset", &finn.email).await;
    app.auth()
        .reset_password(req(
            "",
            pb::ResetPasswordRequest {
                token: link,
                password: "rødgrød med fløde, tak 2026".into(),
            },
        ))
        .await
        .expect("reset");

    for (what, token) in [
        ("Finn's session", &finn_session),
        ("Finn's own API token", &finns_own),
        ("the account's token Finn made", &finns_for_account),
    ] {
        assert_eq!(
            app.who_am_i(token).await.map(drop).unwrap_err().code(),
            Code::Unauthenticated,
            "{what} outlived his reset"
        );
    }
    for (what, token) in [
        ("Eva's session", &eva_session),
        ("Eva's own API token", &evas_own),
        ("the account's token Eva made", &evas_for_account),
    ] {
        app.who_am_i(token)
            .await
            .unwrap_or_else(|status| panic!("{what} ended with Finn's reset: {status:?}"));
    }
    let reset = app
        .history_of(&fixture.admin_token, &finn.id, pb::HistoryActivity::PasswordReset)
        .await;
    assert_eq!(changed_to(&reset[0], "api_tokens_ended"), Some("2"), "{reset:?}");
}

/// The share is read as the call comes in; a token made after the share
/// ended (or became read-only) meanwhile was missed by the revocation's
/// sweep of the tokens made through it, and acted as the account for two
/// years. Here the call is held between the two with the domain's own
/// functions, as a slow call would be.
async fn a_token_asked_for_as_its_share_ends_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (finn, finn_session) = app.member(&fixture, "Finn", &[]).await;
    let account = app
        .service_account(&ua_token, &fixture.org.id)
        .await
        .user
        .expect("user");
    let account_id = uuid::Uuid::parse_str(&account.id).unwrap();
    for ends in ["revoked", "made read-only"] {
        let shared = share(&app, &ua_token, &account, &finn, EDIT)
            .await
            .expect("shared to edit");
        let acting = app
            .domain
            .authenticate_acting(&finn_session, &account.id, true)
            .await
            .expect("Finn acts as the account");
        if ends == "revoked" {
            app.access()
                .revoke_share(req(&ua_token, pb::RevokeShareRequest { id: shared.id }))
                .await
                .expect("revoked");
        } else {
            share(&app, &ua_token, &account, &finn, READ)
                .await
                .expect("made read-only");
        }
        let before = app.fingerprint().await;
        let made = app
            .domain
            .create_api_token(&acting, account_id, "lønkørsel", None, None)
            .await;
        assert!(
            matches!(made, Err(orgadmin_domain::error::DomainError::PermissionDenied { .. })),
            "a token through a share {ends} meanwhile: {made:?}"
        );
        assert!(app.fingerprint().await == before, "the refused token changed data");
    }
}

/// The seed's API user: an account a user administrator shares with two
/// colleagues, one to read (logs, settings), one to edit; neither knows its
/// credentials, and history shows who did what on its behalf.
async fn an_account_is_managed_through_shared_access(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (account, account_token) = app.member(&fixture, "Integration", &[]).await;
    let (eva, eva_token) = app.member(&fixture, "Eva", &[]).await;
    let (finn, finn_token) = app.member(&fixture, "Finn", &[]).await;
    let account_api_token = app.own_api_token(&account_token, &account.id).await;
    let listed = app
        .auth()
        .list_api_tokens(req(
            &account_token,
            pb::ListApiTokensRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .expect("a member lists their own tokens")
        .into_inner()
        .api_tokens;
    assert!(listed.iter().all(|t| t.user_id == account.id), "{listed:?}");
    let api_token_id = listed
        .iter()
        .find(|t| t.name == "test")
        .expect("the account's API token")
        .id
        .clone();

    // Before any share, nobody acts as the account.
    let status = get_user_as(&app, &eva_token, &account, &account.id).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let read_share = share(&app, &ua_token, &account, &eva, READ)
        .await
        .expect("share to read");
    share(&app, &ua_token, &account, &finn, EDIT)
        .await
        .expect("share to edit");

    // Eva reads as the account: its profile, its tokens, who she is.
    let seen = get_user_as(&app, &eva_token, &account, &account.id)
        .await
        .expect("read as the owner");
    assert_eq!(seen.id, account.id);
    let who = app
        .auth()
        .who_am_i(acting_as(&account.id, req(&eva_token, pb::WhoAmIRequest {})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.user_id.as_str(), who.acting_user_id.as_str()),
        (account.id.as_str(), eva.id.as_str())
    );
    assert!(
        !who.acting_may_edit && who.roles.is_empty() && who.admin_levels.is_empty(),
        "{who:?}"
    );
    let tokens = app
        .auth()
        .list_api_tokens(acting_as(
            &account.id,
            req(
                &eva_token,
                pb::ListApiTokensRequest {
                    organisation_id: fixture.org.id.clone(),
                },
            ),
        ))
        .await
        .expect("the account's tokens, read as the account")
        .into_inner()
        .api_tokens;
    assert!(tokens.iter().any(|t| t.id == api_token_id), "{tokens:?}");
    assert!(tokens.iter().all(|t| t.user_id == account.id), "{tokens:?}");

    // A read share edits nothing, and no share opens a call that is not on
    // the owner's own resources: refused, nothing changed.
    let before = app.fingerprint().await;
    let status = app
        .notes()
        .update_notification_preferences(acting_as(&account.id, req(&eva_token, preferences())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("read"), "{status:?}");
    assert_eq!(before, app.fingerprint().await, "a read share changed data");
    let status = app
        .auth()
        .revoke_api_token(acting_as(
            &account.id,
            req(
                &finn_token,
                pb::RevokeApiTokenRequest {
                    id: api_token_id.clone(),
                },
            ),
        ))
        .await;
    // (Finn may: checked below, after the refusals.)
    let finn_revoked = status.expect("an edit share revokes the owner's token");
    assert_eq!(finn_revoked.into_inner().api_token.expect("token").id, api_token_id);
    let after_revoke = app.fingerprint().await;
    let status = app
        .users()
        .deactivate_user(acting_as(
            &account.id,
            req(
                &finn_token,
                pb::DeactivateUserRequest {
                    id: account.id.clone(),
                    ..Default::default()
                },
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("x-orgadmin-act-as"), "{status:?}");
    let status = app
        .auth()
        .create_api_token(acting_as(
            &account.id,
            req(
                &finn_token,
                pb::CreateApiTokenRequest {
                    user_id: account.id.clone(),
                    name: "minted through a share".into(),
                    ..Default::default()
                },
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "no credential is minted through a share: {status:?}"
    );
    assert_eq!(after_revoke, app.fingerprint().await, "refused calls changed data");

    // The revoked token no longer works, and history names Finn as the one
    // who acted, on the account's behalf.
    let status = app.who_am_i(&account_api_token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let events = app
        .history_of(&fixture.admin_token, &account.id, pb::HistoryActivity::ApiTokenRevoked)
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, format!("user:{}", finn.id));
    assert_eq!(events[0].on_behalf_of, format!("user:{}", account.id));

    // Finn changes the account's settings; the account's own history, read
    // as the account, shows the shares.
    app.notes()
        .update_notification_preferences(acting_as(&account.id, req(&finn_token, preferences())))
        .await
        .expect("an edit share changes the owner's settings");
    let changed = app
        .history_of(
            &fixture.admin_token,
            &account.id,
            pb::HistoryActivity::NotificationPreferencesChanged,
        )
        .await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].actor, format!("user:{}", finn.id));
    assert_eq!(changed[0].on_behalf_of, format!("user:{}", account.id));
    let shared = app
        .users()
        .list_user_history(acting_as(
            &account.id,
            req(
                &eva_token,
                pb::ListUserHistoryRequest {
                    user_id: account.id.clone(),
                    activities: vec![pb::HistoryActivity::AccessShared as i32],
                    ..Default::default()
                },
            ),
        ))
        .await
        .expect("history read as the owner")
        .into_inner()
        .events;
    assert_eq!(shared.len(), 2, "{shared:?}");

    // The shares as each side sees them: the administrator all, Eva hers.
    let list = |token: String| {
        let app = &app;
        let org = fixture.org.id.clone();
        async move {
            app.access()
                .list_shares(req(
                    &token,
                    pb::ListSharesRequest {
                        organisation_id: org,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list shares")
                .into_inner()
                .shares
        }
    };
    assert_eq!(list(ua_token.clone()).await.len(), 2);
    let evas = list(eva_token.clone()).await;
    assert_eq!(evas.len(), 1, "{evas:?}");
    assert_eq!(
        (evas[0].grantee_user_id.as_str(), evas[0].access),
        (eva.id.as_str(), READ)
    );

    // Eva gives her share up: at once she no longer acts as the account.
    app.access()
        .revoke_share(req(
            &eva_token,
            pb::RevokeShareRequest {
                id: read_share.id.clone(),
            },
        ))
        .await
        .expect("the colleague gives the share up");
    let status = get_user_as(&app, &eva_token, &account, &account.id).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let ended = app
        .history_of(&fixture.admin_token, &account.id, pb::HistoryActivity::ShareRevoked)
        .await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].actor, format!("user:{}", eva.id));

    // A deactivated account is acted as by nobody (R-USR-4).
    app.users()
        .deactivate_user(req(
            &ua_token,
            pb::DeactivateUserRequest {
                id: account.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("deactivate the account");
    let status = get_user_as(&app, &finn_token, &account, &account.id).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    app.finish().await;
}

/// Seed 003's bank box: an administrator never opens a user's resources to
/// themselves, whatever they hold; a colleague must. The owner shares their
/// own, but not with themselves.
async fn the_administrator_who_shares_a_users_resources_with_themselves_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (ua, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (owner, owner_token) = app.member(&fixture, "Ole", &[]).await;
    let (colleague, colleague_token) = app.member(&fixture, "Carl", &[]).await;

    let before = app.fingerprint().await;
    for (token, grantee) in [(&ua_token, &ua), (&fixture.admin_token, &fixture.admin)] {
        let status = share(&app, token, &owner, grantee, EDIT).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("two keys"), "{status:?}");
    }
    // A plain colleague shares nobody's but their own.
    let status = share(&app, &colleague_token, &owner, &colleague, READ)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = share(&app, &owner_token, &owner, &owner, READ).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(before, app.fingerprint().await, "refused shares changed data");

    // The organisation administrator opens it to the user administrator:
    // two people, two keys.
    share(&app, &fixture.admin_token, &owner, &ua, READ)
        .await
        .expect("a colleague shares");
    get_user_as(&app, &ua_token, &owner, &owner.id)
        .await
        .expect("the user administrator now reads as the owner");
    // Sharing again changes the access of the one share.
    share(&app, &owner_token, &owner, &ua, EDIT)
        .await
        .expect("the owner widens it");
    let shares = app
        .access()
        .list_shares(req(
            &owner_token,
            pb::ListSharesRequest {
                organisation_id: fixture.org.id.clone(),
                owner_user_id: owner.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .shares;
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0].access, EDIT);
    assert_eq!(shares[0].shared_by, format!("user:{}", owner.id));
    app.finish().await;
}

/// Being shared with confers no administration: acting as an organisation
/// administrator gives none of their rights, and no call outside the
/// owner's own resources.
async fn a_share_confers_no_administration(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (plain, _) = app.member(&fixture, "Pia", &[]).await;
    let (eva, eva_token) = app.member(&fixture, "Eva", &[]).await;
    share(&app, &fixture.admin_token, &fixture.admin, &eva, EDIT)
        .await
        .expect("the administrator shares their own");

    get_user_as(&app, &eva_token, &fixture.admin, &fixture.admin.id)
        .await
        .expect("the owner's own profile");
    let before = app.fingerprint().await;
    // The header twice (the owner's id and another's) is refused by name:
    // whose call it is is never ambiguous.
    let mut twice = acting_as(
        &fixture.admin.id,
        req(
            &eva_token,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ),
    );
    twice
        .metadata_mut()
        .append("x-orgadmin-act-as", plain.id.parse().expect("header"));
    let status = app.users().get_user(twice).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_fields(&status), ["x-orgadmin-act-as"]);
    // The administrator reads any user; acting as them, Eva reads none but
    // the administrator.
    let status = get_user_as(&app, &eva_token, &fixture.admin, &plain.id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = get_user_as(&app, &eva_token, &fixture.admin, &eva.id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .users()
        .list_users(acting_as(
            &fixture.admin.id,
            req(
                &eva_token,
                pb::ListUsersRequest {
                    organisation_id: fixture.org.id.clone(),
                    ..Default::default()
                },
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .access()
        .share_access(acting_as(
            &fixture.admin.id,
            req(
                &eva_token,
                pb::ShareAccessRequest {
                    owner_user_id: plain.id.clone(),
                    grantee_user_id: eva.id.clone(),
                    access: EDIT,
                },
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // The operator is nobody's colleague.
    let status = get_user_as(&app, OPERATOR_TOKEN, &fixture.admin, &fixture.admin.id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Without a token, nobody at all.
    let status = get_user_as(&app, "", &fixture.admin, &fixture.admin.id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(before, app.fingerprint().await, "refused calls changed data");
    app.finish().await;
}

/// Deleting a user ends what they held and what was made on their
/// strength: their levels, their grants with every grant passed on from
/// them (cascade), and the shares of their resources and with them, each
/// in history. The unit their level was held on can then go.
async fn a_deleted_users_delegation_ends_with_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let unit = app.unit(&fixture, "Lager", "").await;
    let (leaver, leaver_token) = app.member(&fixture, "Lone", &[]).await;
    let (heir, _) = app.member(&fixture, "Hans", &[]).await;
    let (owner, _) = app.member(&fixture, "Olga", &[]).await;
    app.grant_level(&fixture.admin_token, &leaver.id, 3, &unit.id)
        .await
        .expect("level");
    let right = app
        .access()
        .create_grant(req(
            &fixture.admin_token,
            pb::CreateGrantRequest {
                grantee_user_id: leaver.id.clone(),
                right: "docs.read".into(),
                actions: vec![pb::GrantAction::Read as i32],
                grantable_actions: vec![pb::GrantAction::Read as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("grant")
        .into_inner()
        .grant
        .unwrap();
    let passed_on = app
        .access()
        .create_grant(req(
            &leaver_token,
            pb::CreateGrantRequest {
                grantee_user_id: heir.id.clone(),
                right: "docs.read".into(),
                actions: vec![pb::GrantAction::Read as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("passed on")
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(passed_on.parent_grant_id, right.id);
    share(&app, &fixture.admin_token, &owner, &leaver, READ)
        .await
        .expect("shared with the leaver");
    share(&app, &leaver_token, &leaver, &heir, READ)
        .await
        .expect("the leaver's own, shared");

    app.delete_user(&fixture.admin_token, &leaver.id)
        .await
        .expect("delete the leaver");

    let org = fixture.org.id.clone();
    let levels = app
        .access()
        .list_admin_levels(req(
            &fixture.admin_token,
            pb::ListAdminLevelsRequest {
                organisation_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .admin_levels;
    assert!(levels.is_empty(), "{levels:?}");
    let grants = app
        .access()
        .list_grants(req(
            &fixture.admin_token,
            pb::ListGrantsRequest {
                organisation_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.is_empty(), "the grant and the one passed on from it: {grants:?}");
    let shares = app
        .access()
        .list_shares(req(
            &fixture.admin_token,
            pb::ListSharesRequest {
                organisation_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .shares;
    assert!(shares.is_empty(), "{shares:?}");

    let revoked = app
        .history_of(&fixture.admin_token, &heir.id, pb::HistoryActivity::GrantRevoked)
        .await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(
        revoked[0]
            .changes
            .iter()
            .any(|c| c.field == "revoked_with" && c.after == right.id),
        "{revoked:?}"
    );
    let level_events = app
        .history_of(&fixture.admin_token, &leaver.id, pb::HistoryActivity::AdminLevelRevoked)
        .await;
    assert_eq!(level_events.len(), 1, "{level_events:?}");
    for who in [&owner, &leaver] {
        let ended = app
            .history_of(&fixture.admin_token, &who.id, pb::HistoryActivity::ShareRevoked)
            .await;
        assert_eq!(ended.len(), 1, "{ended:?}");
    }
    app.orgs()
        .delete_unit(req(&fixture.admin_token, pb::DeleteUnitRequest { id: unit.id.clone() }))
        .await
        .expect("no level holds the unit any more");
    app.finish().await;
}

/// The seed's API user as a service account: no mailbox, no activation,
/// no password; the people it is shared with to edit make its API tokens
/// (the only credential made through a share), and history says who.
async fn the_service_account_managed_through_shared_access(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (finn, finn_token) = app.member(&fixture, "Finn", &[]).await;
    let (eva, eva_token) = app.member(&fixture, "Eva", &[]).await;
    // Every mail queued so far, whatever its state.
    let mails = || async {
        let (pending, sent, failed) = app.domain.outbox_counts().await.expect("outbox");
        pending + sent + failed
    };
    let mails_before = mails().await;
    let created = app.service_account(&ua_token, &fixture.org.id).await;
    let account = created.user.expect("user");
    assert!(account.service_account);
    assert_eq!(account.state(), pb::UserState::Active);
    assert!(created.activation_code.is_empty());
    // Never mailed: not at creation, not for a forgotten password.
    app.auth()
        .request_password_reset(req(
            "",
            pb::RequestPasswordResetRequest {
                login_id: account.email.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("the same answer for every login id");
    assert_eq!(mails().await, mails_before);
    let status = app
        .users()
        .send_password_reset(req(
            &ua_token,
            pb::SendPasswordResetRequest {
                user_id: account.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), "SERVICE_ACCOUNT");
    // A new address applies at once: no verification link to a mailbox
    // nobody reads.
    let moved = app
        .users()
        .update_user(req(
            &ua_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: account.id.clone(),
                    email: "loen-api-2@vaerksted.example".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("a service account's new address")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (moved.email.as_str(), moved.pending_email.as_str()),
        ("loen-api-2@vaerksted.example", "")
    );
    assert_eq!(mails().await, mails_before);
    // What CreateUser refuses a service account, UpdateUser refuses too:
    // an administrative role, a birth date, a signing right.
    let before = app.fingerprint().await;
    for (path, user, field) in [
        (
            "roles",
            pb::User {
                roles: vec![pb::Role::UserAdmin as i32],
                ..moved.clone()
            },
            "user.roles",
        ),
        (
            "birth_date",
            pb::User {
                birth_date: "1980-01-01".into(),
                ..moved.clone()
            },
            "cpr",
        ),
        (
            "signing_right",
            pb::User {
                signing_right: true,
                ..moved.clone()
            },
            "user.signing_right",
        ),
    ] {
        let status = app
            .users()
            .update_user(req(
                &fixture.admin_token,
                pb::UpdateUserRequest {
                    user: Some(user),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![path.into()],
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(bad_fields(&status), [field], "{path}");
    }
    assert!(app.fingerprint().await == before, "refused updates changed data");
    // Shared with, never a sharer's way in: nobody shares with it.
    let status = share(&app, &ua_token, &eva, &account, READ).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let finns_share = share(&app, &ua_token, &account, &finn, EDIT)
        .await
        .expect("shared to edit");
    share(&app, &ua_token, &account, &eva, READ)
        .await
        .expect("shared to read");
    let make_token = |token: String, owner: pb::User| token_as(&app, token, owner.id);
    // To read is not to make credentials.
    let status = make_token(eva_token.clone(), account.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let made = make_token(finn_token.clone(), account.clone())
        .await
        .expect("an edit share makes the service account's token");
    let who = app.who_am_i(&made.secret).await.expect("the token works");
    assert_eq!(who.user_id, account.id);
    assert!(who.roles.iter().all(|r| *r == pb::Role::User as i32), "{who:?}");
    // An account is no person: it has no name to hide. Approved, a request
    // would have made it a pending anonymous profile with an activation code.
    let before = app.fingerprint().await;
    let anonymous = app
        .users()
        .request_anonymity(req(
            &made.secret,
            pb::RequestAnonymityRequest {
                reason: "Jeg ønsker ikke mit navn vist i systemet.".into(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(anonymous, Code::FailedPrecondition)),
        "SERVICE_ACCOUNT"
    );
    assert!(app.fingerprint().await == before, "a refused request changed something");
    let events = app
        .history_of(&fixture.admin_token, &account.id, pb::HistoryActivity::ApiTokenCreated)
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, format!("user:{}", finn.id));
    assert_eq!(events[0].on_behalf_of, format!("user:{}", account.id));
    // Nor does the account make its own tokens: one made with Finn's token
    // would name the account, not Finn, and outlive his share.
    let before = app.fingerprint().await;
    let chained = app
        .auth()
        .create_api_token(req(
            &made.secret,
            pb::CreateApiTokenRequest {
                user_id: account.id.clone(),
                name: "kæde".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_code(chained, Code::PermissionDenied);
    assert_eq!(before, app.fingerprint().await);
    // The account does not share itself: with the token, Finn could open
    // his share again once it is ended.
    let before = app.fingerprint().await;
    let status = share(&app, &made.secret, &account, &finn, EDIT).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(before, app.fingerprint().await);
    // The token Finn made through his share ends with it; his own stays.
    let finns_own = app
        .auth()
        .create_api_token(req(
            &finn_token,
            pb::CreateApiTokenRequest {
                user_id: finn.id.clone(),
                name: "min egen".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("his own token")
        .into_inner();
    app.access()
        .revoke_share(req(
            &ua_token,
            pb::RevokeShareRequest {
                id: finns_share.id.clone(),
            },
        ))
        .await
        .expect("share ended");
    assert_code(app.who_am_i(&made.secret).await, Code::Unauthenticated);
    app.who_am_i(&finns_own.secret).await.expect("his own token is his");
    // Taking the edit right back ends the tokens made with it too.
    share(&app, &ua_token, &account, &finn, EDIT)
        .await
        .expect("shared to edit again");
    let again = make_token(finn_token.clone(), account.clone())
        .await
        .expect("a token through the new share");
    share(&app, &ua_token, &account, &finn, READ)
        .await
        .expect("down to reading");
    assert_code(app.who_am_i(&again.secret).await, Code::Unauthenticated);
    // While Finn is deactivated, even for a time, the token he made acts
    // no more; back, it works again (the share still stands).
    share(&app, &ua_token, &account, &finn, EDIT)
        .await
        .expect("shared to edit once more");
    let during_leave = make_token(finn_token.clone(), account.clone())
        .await
        .expect("a token before his leave");
    crate::seats::deactivate(&app, &ua_token, &finn.id, None)
        .await
        .expect("Finn deactivated");
    assert_code(app.who_am_i(&during_leave.secret).await, Code::Unauthenticated);
    app.users()
        .reactivate_user(req(
            &ua_token,
            pb::ReactivateUserRequest {
                id: finn.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("Finn back");
    app.who_am_i(&during_leave.secret)
        .await
        .expect("the token acts again with its maker back");
    // His sessions ended with the deactivation; his own API token did not.
    assert_code(app.who_am_i(&finn_token).await, Code::Unauthenticated);
    let finn_token = finns_own.secret.clone();
    // Up to 645cfd0 the account could make tokens for itself: such a token
    // names the account as its maker, so no share's end or person's leave
    // reaches it. Migration 75 revokes those, and only those.
    let self_made = make_token(finn_token.clone(), account.clone())
        .await
        .expect("a token to play one the account made");
    let db = app.domain.db();
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => "UPDATE api_tokens SET created_by = $1 WHERE token_hash = $2",
        _ => "UPDATE api_tokens SET created_by = ? WHERE token_hash = ?",
    };
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        sql,
        [
            format!("user:{}", account.id).into(),
            orgadmin_domain::secrets::token_hash(&self_made.secret).into(),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(
        orgadmin_migrations::revoke_self_made_service_account_tokens(db)
            .await
            .unwrap(),
        1
    );
    assert_code(app.who_am_i(&self_made.secret).await, Code::Unauthenticated);
    app.who_am_i(&during_leave.secret)
        .await
        .expect("a token a person made stays");
    // One an older release let the account make after migration 75 had run
    // (its pods serve on during the upgrade) is no credential either.
    let older = make_token(finn_token.clone(), account.clone())
        .await
        .expect("a token through the share");
    let older_id: uuid::Uuid = older.api_token.as_ref().unwrap().id.parse().unwrap();
    // (Not used before: the cache would answer for a second.)
    app.execute_bound(
        "UPDATE api_tokens SET created_by = $1 WHERE id = $2",
        vec![format!("user:{}", account.id).into(), older_id.into()],
    )
    .await;
    assert_code(app.who_am_i(&older.secret).await, Code::Unauthenticated);
    share(&app, &ua_token, &account, &finn, READ)
        .await
        .expect("down to reading again");

    // A person's edit share makes no credential for them.
    share(&app, &eva_token, &eva, &finn, EDIT)
        .await
        .expect("Eva shares her own");
    let before = app.fingerprint().await;
    let status = make_token(finn_token.clone(), eva.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(before, app.fingerprint().await);
    app.finish().await;
}

/// A level 1 or 2 shares the resources of the ordinary users in its scope,
/// never those of an administrator or another level holder placed there.
async fn a_level_shares_ordinary_users_resources_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let unit = app.unit(&fixture, "Nord", "").await;
    let (level_two, level_two_token) = app.member_in(&fixture, "Leif", &unit.id).await;
    app.grant_level(&fixture.admin_token, &level_two.id, 2, &unit.id)
        .await
        .expect("level 2 on Nord");
    let (plain, _) = app.member_in(&fixture, "Pia", &unit.id).await;
    let (colleague, _) = app.member_in(&fixture, "Carl", &unit.id).await;
    let admin_in_unit = pb::CreateUserRequest {
        unit_id: unit.id.clone(),
        ..new_user(&fixture.org.id, "Adam", &[pb::Role::OrganisationAdmin])
    };
    let (admin, _) = app.create_and_activate(&fixture.admin_token, admin_in_unit).await;
    let (other_level, _) = app.member_in(&fixture, "Lis", &unit.id).await;
    app.grant_level(&fixture.admin_token, &other_level.id, 3, &unit.id)
        .await
        .expect("level 3 on Nord");

    let before = app.fingerprint().await;
    for owner in [&admin, &other_level] {
        let status = share(&app, &level_two_token, owner, &colleague, READ)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(before, app.fingerprint().await, "refused shares changed data");
    share(&app, &level_two_token, &plain, &colleague, READ)
        .await
        .expect("an ordinary user's, in scope");
    app.finish().await;
}

/// Two changes of one person's notification settings queue: history's
/// "before" of the second is what the first set. Each read the settings
/// unlocked, so the second recorded BOTH -> IN_APP over the first's EMAIL.
/// (The first is played by a session that did what a change does, the
/// person's row then the setting, not yet committed.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_changes_of_a_setting_record_what_each_changed() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (member, token) = app.member(&fixture, "Indstilling", &[]).await;
    let first = app
        .in_progress(&[
            format!("SELECT id FROM users WHERE id = '{}' FOR UPDATE", member.id),
            format!(
                "INSERT INTO notification_preferences (user_id, kind, channel) VALUES ('{}', 'ACCOUNT', 'MAIL') \
                 ON CONFLICT (user_id, kind) DO UPDATE SET channel = excluded.channel",
                member.id
            ),
        ])
        .await;
    let second = {
        let mut notes = app.notes();
        let token = token.clone();
        tokio::spawn(async move {
            notes
                .update_notification_preferences(req(
                    &token,
                    pb::UpdateNotificationPreferencesRequest {
                        preferences: vec![pb::NotificationPreference {
                            kind: pb::NotificationKind::Account as i32,
                            channel: pb::DeliveryChannel::InApp as i32,
                        }],
                    },
                ))
                .await
        })
    };
    // Waiting on the first: on the person's row (or, unlocked as before, on
    // the setting's).
    app.until_waiting_on_a_lock("").await;
    first.commit().await;
    second.await.unwrap().expect("the second change");
    let changed = app
        .history_of(
            &fixture.admin_token,
            &member.id,
            pb::HistoryActivity::NotificationPreferencesChanged,
        )
        .await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    let change = &changed[0].changes[0];
    assert_eq!((change.before.as_str(), change.after.as_str()), ("MAIL", "IN_APP"));
}
