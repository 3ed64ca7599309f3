//! The authorization check: the permission a method needs, and whether a token's permission
//! and route rules allow it on a normalized path. Path normalization itself is
//! [`crate::token::normalize_path`] (re-exported here); route patterns are
//! [`crate::token::RoutePattern`].

pub use crate::token::{normalize_path, PathError};
use crate::token::{segments, Permission, Token};

/// The permission a method needs: read for GET/HEAD/OPTIONS, write for PUT/POST/PATCH/DELETE,
/// manager for anything else.
pub fn required_permission(method: &http::Method) -> Permission {
    match *method {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Permission::Read,
        http::Method::PUT | http::Method::POST | http::Method::PATCH | http::Method::DELETE => {
            Permission::Write
        }
        _ => Permission::Manager,
    }
}

/// Decides whether `token` may use `method` on the normalized `path`.
///
/// The permission must be enough; then a deny rule (a route with access `none`) matching the
/// path refuses it, whatever the order of the routes; then, if the token has allow rules
/// (`read`/`write` routes), one of them with enough access must match. A token with deny rules
/// only allows everything its permission allows except the denied paths.
pub fn allows(token: &Token, required: Permission, path: &str) -> bool {
    if token.permission < required {
        return false;
    }
    if token.routes.is_empty() {
        return true;
    }
    // Split once for all routes.
    let segs: Vec<&str> = segments(path).collect();
    let segs = &segs[..];
    let (mut has_allow, mut allowed) = (false, false);
    for r in &token.routes {
        match r.access.as_permission() {
            None => {
                if r.pattern.matches_segments(segs) {
                    return false;
                }
            }
            Some(access) => {
                has_allow = true;
                if !allowed && access >= required && r.pattern.matches_segments(segs) {
                    allowed = true;
                }
            }
        }
    }
    allowed || !has_allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Access, Route, RoutePattern};

    fn token(permission: Permission, routes: &[(&str, Access)]) -> Token {
        Token {
            permission,
            routes: routes
                .iter()
                .map(|(p, a)| Route {
                    pattern: RoutePattern::parse(p).unwrap(),
                    access: *a,
                })
                .collect(),
            ..Token::for_tests("AAAAAAAAAAAA", "t")
        }
    }

    #[test]
    fn permissions_and_routes() {
        use Permission::*;
        let read = token(Read, &[]);
        assert!(allows(&read, Read, "/x"));
        assert!(!allows(&read, Write, "/x"));
        let write = token(Write, &[]);
        assert!(allows(&write, Read, "/x") && allows(&write, Write, "/x"));
        assert!(!allows(&write, Manager, "/x"));
        let scoped = token(
            Write,
            &[("/p2/acme/*", Access::Read), ("/upload", Access::Write)],
        );
        assert!(allows(&scoped, Read, "/p2/acme/a.json"));
        assert!(!allows(&scoped, Write, "/p2/acme/a.json"));
        assert!(allows(&scoped, Write, "/upload/a.zip"));
        assert!(allows(&scoped, Read, "/upload/a.zip"));
        assert!(!allows(&scoped, Read, "/p2/other/a.json"));
        // a route cannot grant more than the token's permission
        let ro = token(Read, &[("/upload", Access::Write)]);
        assert!(!allows(&ro, Write, "/upload/a"));
        assert_eq!(required_permission(&http::Method::GET), Read);
        assert_eq!(required_permission(&http::Method::DELETE), Write);
        assert_eq!(required_permission(&http::Method::TRACE), Manager);
    }

    #[test]
    fn deny_rules_win_in_any_order() {
        use Permission::*;
        let allow = ("/p2/acme/*", Access::Read);
        let deny = ("/p2/acme/internal-*", Access::None);
        for routes in [[allow, deny], [deny, allow]] {
            let t = token(Write, &routes);
            assert!(allows(&t, Read, "/p2/acme/widget.json"));
            assert!(!allows(&t, Read, "/p2/acme/internal-x.json"));
            assert!(!allows(&t, Read, "/p2/acme/internal-x/deeper"));
            assert!(!allows(&t, Write, "/p2/acme/widget.json"));
            assert!(!allows(&t, Read, "/p2/other/a.json"));
        }
        // Deny rules only: everything the permission allows, less the denied paths.
        let t = token(
            Write,
            &[("/secret", Access::None), ("/p2/*/private", Access::None)],
        );
        assert!(allows(&t, Read, "/anything"));
        assert!(allows(&t, Write, "/p2/acme/public"));
        assert!(!allows(&t, Read, "/secret/x"));
        assert!(!allows(&t, Write, "/p2/acme/private/y"));
        assert!(!allows(&t, Manager, "/anything"));
        // A deny rule over everything.
        let t = token(Read, &[("/", Access::None), ("/p2", Access::Read)]);
        assert!(!allows(&t, Read, "/p2/x"));
    }
}
