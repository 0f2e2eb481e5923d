//! The rules for the names the application passes in: user and tenant ids, room names and event
//! names. Every API call checks them before anything is sent, so a bad name is a typed error at
//! the call, never bytes on a wire. Public, so an application can check input at its own edge.

use crate::engine::Identity;
use crate::error::BroadcastError;

/// Longest user id, tenant id, room name or event name, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Socket.IO event names a server may not emit (the client reserves them).
pub const RESERVED_EVENT_NAMES: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Checks an id: 1 to 256 bytes, no control characters (so no CR, LF or NUL can reach a wire
/// format, and no separator tricks matter: ids are never concatenated into keys).
fn check_id(kind: &str, s: &str, allow_empty: bool) -> Result<(), String> {
    if s.is_empty() && !allow_empty {
        return Err(format!("{kind} is empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!("{kind} is {} bytes, over {MAX_ID_LEN}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{kind} contains a control character"));
    }
    Ok(())
}

/// A user: a non-empty user id and a tenant (may be empty: the default tenant).
pub fn validate_user(user: &Identity) -> Result<(), BroadcastError> {
    check_id("user id", &user.user, false).map_err(BroadcastError::InvalidUser)?;
    check_id("tenant id", &user.tenant, true).map_err(BroadcastError::InvalidUser)
}

/// A tenant id: may be empty (the default tenant).
pub fn validate_tenant(tenant: &str) -> Result<(), BroadcastError> {
    check_id("tenant id", tenant, true).map_err(BroadcastError::InvalidTenant)
}

/// A room name: 1 to 256 bytes, no control characters, not starting with `tidings:` (the
/// prefix of the rooms that stand for tidings users and tenants in a Node.js socket.io cluster,
/// [`crate::user_room`]: no application room may pass for one).
pub fn validate_room(room: &str) -> Result<(), BroadcastError> {
    check_id("room", room, false).map_err(BroadcastError::InvalidRoom)?;
    if room.starts_with(crate::engine::adapter::RESERVED_ROOM_PREFIX) {
        return Err(BroadcastError::InvalidRoom(format!(
            "rooms starting with {:?} are reserved",
            crate::engine::adapter::RESERVED_ROOM_PREFIX
        )));
    }
    Ok(())
}

/// An event name: an id (see above) that Socket.IO clients do not reserve.
pub fn validate_event(event: &str) -> Result<(), BroadcastError> {
    check_id("event name", event, false).map_err(BroadcastError::InvalidEvent)?;
    if RESERVED_EVENT_NAMES.contains(&event) {
        return Err(BroadcastError::InvalidEvent(format!(
            "{event:?} is reserved by Socket.IO"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_user(&Identity::new("t", "u")).is_ok());
        assert!(validate_user(&Identity::user("u")).is_ok());
        assert!(matches!(
            validate_user(&Identity::new("t", "")),
            Err(BroadcastError::InvalidUser(_))
        ));
        assert!(validate_user(&Identity::new("t\n", "u")).is_err());
        assert!(validate_user(&Identity::new("t", "a".repeat(257))).is_err());
        assert!(validate_user(&Identity::new("t", "a".repeat(256))).is_ok());
        assert!(validate_room("r:with:colons and spaces").is_ok());
        assert!(validate_room("").is_err());
        assert!(validate_room("a\0b").is_err());
        assert!(validate_room("tidings:user:[\"t\",\"u\"]").is_err());
        assert!(validate_room("tidings").is_ok());
        assert!(validate_event("notification").is_ok());
        assert!(validate_event("connect").is_err());
        assert!(validate_event("a\r\nid: 9").is_err());
        assert!(validate_tenant("").is_ok());
    }
}
