//! Calls made as another user through shared access (R-ACC-5): a colleague
//! the owner shared their resources with sends `x-orgadmin-act-as: <owner
//! user id>` beside their own token. Only the calls below may be made so:
//! they touch the owner's own resources (profile, history, API tokens,
//! notifications and their settings) and nothing of administration; every
//! other call with the header is refused before it does anything. Which
//! share a call needs is listed here, next to the method names it is about;
//! whether the caller holds it is the domain's (`authenticate_acting`).

/// The request header naming the user the caller acts as.
pub const ACT_AS_HEADER: &str = "x-orgadmin-act-as";

/// The full method path of a request that carries [`ACT_AS_HEADER`], put
/// in the request's extensions by `shed`, which sees every call first.
#[derive(Debug, Clone)]
pub struct CalledMethod(pub String);

/// What a call made as the owner needs the share to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Read,
    Edit,
}

/// Every call a share lets a colleague make as the owner.
pub const SHARED_CALLS: &[(&str, Needs)] = &[
    ("/orgadmin.v1.UserService/GetUser", Needs::Read),
    ("/orgadmin.v1.UserService/ListUserHistory", Needs::Read),
    ("/orgadmin.v1.AuthService/WhoAmI", Needs::Read),
    ("/orgadmin.v1.AuthService/ListApiTokens", Needs::Read),
    ("/orgadmin.v1.AuthService/RevokeApiToken", Needs::Edit),
    // For a service account only (the domain refuses a person's).
    ("/orgadmin.v1.AuthService/CreateApiToken", Needs::Edit),
    ("/orgadmin.v1.NotificationService/ListNotifications", Needs::Read),
    (
        "/orgadmin.v1.NotificationService/GetNotificationPreferences",
        Needs::Read,
    ),
    (
        "/orgadmin.v1.NotificationService/UpdateNotificationPreferences",
        Needs::Edit,
    ),
];

/// What `method` needs when made as another user; none: it cannot be.
pub fn needs(method: &str) -> Option<Needs> {
    SHARED_CALLS
        .iter()
        .find(|(path, _)| *path == method)
        .map(|(_, needs)| *needs)
}
