//! Client tokens: JWTs (RFC 7519, compact JWS) whose signatures are verified with RustCrypto —
//! `hmac` + `sha2` for HS256, `rsa` (PKCS#1 v1.5) for RS256, `p256` (ECDSA) for ES256; nothing
//! cryptographic is written here. One algorithm is configured and only that one is accepted:
//! `alg: none` and every other algorithm are refused before any key is used. The signature is
//! checked before the claims are read; then `exp` is required, `nbf` checked when present, `sub`
//! is the user, a configurable claim the tenant, and an optional claim lists rooms to join.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use signature::Verifier;
use tidings::Identity;

use crate::settings::{SettingError, Settings};

/// Why a token was refused: a stable code (logs, metrics, `connect_error` data) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> TokenError {
    TokenError {
        code,
        message: message.into(),
    }
}

/// A verified token: who it is, and the rooms it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    pub rooms: Vec<String>,
}

/// The verification key of the one accepted algorithm.
enum Key {
    Hs256(Vec<u8>),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    Es256(Box<p256::ecdsa::VerifyingKey>),
}

impl Key {
    fn alg(&self) -> &'static str {
        match self {
            Key::Hs256(_) => "HS256",
            Key::Rs256(_) => "RS256",
            Key::Es256(_) => "ES256",
        }
    }

    /// Whether `sig` is a valid signature of `input` (RFC 7515 §5.2 step 8).
    fn verifies(&self, input: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Hs256(secret) => match hmac::Hmac::<Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(input);
                    // Constant-time comparison inside `hmac`.
                    mac.verify_slice(sig).is_ok()
                }
                Err(_) => false,
            },
            Key::Rs256(key) => rsa::pkcs1v15::Signature::try_from(sig)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
            // JWS ES256 signatures are the 64-byte r || s (RFC 7518 §3.4), not DER.
            Key::Es256(key) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
        }
    }
}

/// The longest token accepted (a header field is at most a few KiB anyway).
const MAX_TOKEN: usize = 8 * 1024;

fn load_key(s: &Settings) -> Result<Option<Key>, SettingError> {
    let secret = s.optional("jwt_secret");
    let key_file = s.optional("jwt_public_key_file");
    let named = s.optional("jwt_algorithm");
    let err = |m: String| Err(SettingError(m));
    match (secret, key_file) {
        (None, None) => match named {
            Some(_) => {
                err("jwt_algorithm is set but neither jwt_secret nor jwt_public_key_file".into())
            }
            None => Ok(None),
        },
        (Some(_), Some(_)) => err("set jwt_secret or jwt_public_key_file, not both".into()),
        (Some(secret), None) => {
            if named.as_deref().is_some_and(|a| a != "HS256") {
                return err("jwt_secret goes with jwt_algorithm HS256".into());
            }
            // RFC 7518 §3.2: a key of the same size as the hash output (32 bytes) or larger.
            if secret.len() < 32 {
                return err("jwt_secret must be at least 32 bytes (RFC 7518 §3.2)".into());
            }
            Ok(Some(Key::Hs256(secret.into_bytes())))
        }
        (None, Some(path)) => {
            let pem = std::fs::read_to_string(&path)
                .map_err(|e| SettingError(format!("jwt_public_key_file {path}: {e}")))?;
            let bad = |what: &str| SettingError(format!("jwt_public_key_file {path}: not {what}"));
            match named.as_deref() {
                Some("RS256") => {
                    use rsa::pkcs1::DecodeRsaPublicKey;
                    use rsa::pkcs8::DecodePublicKey;
                    use rsa::traits::PublicKeyParts;
                    let key = rsa::PublicKey::from_public_key_pem(&pem)
                        .or_else(|_| rsa::PublicKey::from_pkcs1_pem(&pem))
                        .map_err(|_| bad("an RSA public key in PEM (SPKI or PKCS#1)"))?;
                    if key.size() < 256 {
                        return err(format!(
                            "jwt_public_key_file {path}: RSA keys must have at least 2048 bits"
                        ));
                    }
                    Ok(Some(Key::Rs256(Box::new(
                        rsa::pkcs1v15::VerifyingKey::new(key),
                    ))))
                }
                Some("ES256") => {
                    use p256::pkcs8::DecodePublicKey;
                    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem)
                        .map_err(|_| bad("a P-256 public key in PEM (SPKI)"))?;
                    Ok(Some(Key::Es256(Box::new(key))))
                }
                _ => err("jwt_public_key_file needs jwt_algorithm RS256 or ES256".into()),
            }
        }
    }
}

/// The configured verifier.
pub struct Jwt {
    key: Key,
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
    rooms_claim: Option<String>,
}

/// A base64url part of the token, decoded (no padding, RFC 7515 §2).
fn part(p: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(p).ok()
}

/// A decoded part that must be a JSON object.
fn object(p: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&part(p)?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| refused("bad_claims", format!("{name} must be a number"))),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Jwt {
    /// The verifier the settings describe, or `None` when no JWT key is configured.
    pub fn from_settings(s: &Settings) -> Result<Option<Jwt>, SettingError> {
        let Some(key) = load_key(s)? else {
            return Ok(None);
        };
        Ok(Some(Jwt {
            key,
            leeway: s.u64("jwt_leeway_s")?,
            issuer: s.optional("jwt_issuer"),
            audience: s.optional("jwt_audience"),
            tenant_claim: s.str("jwt_tenant_claim").to_string(),
            rooms_claim: s.optional("jwt_rooms_claim"),
        }))
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: f64) -> Result<Verified, TokenError> {
        let malformed = || refused("malformed_token", "the token is not a JWT");
        if token.len() > MAX_TOKEN {
            return Err(malformed());
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let header = object(h).ok_or_else(malformed)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(refused(
                "alg_none",
                "unsigned tokens (alg none) are refused",
            ));
        }
        if alg != self.key.alg() {
            return Err(refused(
                "wrong_algorithm",
                format!("tokens must be signed with {}", self.key.alg()),
            ));
        }
        // RFC 7515 §4.1.11: extensions that must be understood; none are.
        if header.contains_key("crit") {
            return Err(refused(
                "malformed_token",
                "the token's crit header is not supported",
            ));
        }
        let sig = part(sig).ok_or_else(malformed)?;
        let input = token.get(..h.len() + 1 + p.len()).ok_or_else(malformed)?;
        if !self.key.verifies(input.as_bytes(), &sig) {
            return Err(refused(
                "bad_signature",
                "the token's signature does not verify",
            ));
        }
        let claims = object(p).ok_or_else(malformed)?;
        let leeway = self.leeway as f64;
        let exp = numeric_date(&claims, "exp")?
            .ok_or_else(|| refused("missing_claim", "the token has no exp claim"))?;
        // RFC 7519 §4.1.4: not accepted "on or after" the expiration time.
        if now >= exp + leeway {
            return Err(refused("token_expired", "the token has expired"));
        }
        if numeric_date(&claims, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(refused(
                "token_not_yet_valid",
                "the token is not valid yet (nbf)",
            ));
        }
        if let Some(iss) = &self.issuer {
            match claims.get("iss").and_then(Value::as_str) {
                None => return Err(refused("missing_claim", "the token has no iss claim")),
                Some(i) if i != iss => {
                    return Err(refused(
                        "wrong_issuer",
                        "the token's issuer is not accepted",
                    ))
                }
                Some(_) => {}
            }
        }
        // RFC 7519 §4.1.3: a token with an audience is refused unless we are in it.
        let aud_ok = |want: &str| match claims.get("aud") {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        match (&self.audience, claims.contains_key("aud")) {
            (Some(_), false) => return Err(refused("missing_claim", "the token has no aud claim")),
            (Some(want), true) if !aud_ok(want) => {
                return Err(refused(
                    "wrong_audience",
                    "the token's audience is not accepted",
                ))
            }
            (None, true) => {
                return Err(refused(
                    "wrong_audience",
                    "the token's audience is not accepted",
                ))
            }
            _ => {}
        }
        let user = match claims.get("sub") {
            None => return Err(refused("missing_claim", "the token has no sub claim")),
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err(refused("bad_claims", "sub must be a non-empty string")),
        };
        let tenant = match claims.get(&self.tenant_claim) {
            None | Some(Value::Null) => "",
            Some(Value::String(t)) => t.as_str(),
            Some(_) => {
                return Err(refused(
                    "bad_claims",
                    format!("{} must be a string", self.tenant_claim),
                ))
            }
        };
        let identity = Identity::new(tenant, user);
        tidings::validate::validate_user(&identity)
            .map_err(|e| refused("bad_claims", e.to_string()))?;
        let mut rooms = Vec::new();
        if let Some(claim) = &self.rooms_claim {
            match claims.get(claim) {
                None | Some(Value::Null) => {}
                Some(Value::Array(list)) => {
                    for r in list {
                        let Some(name) = r.as_str() else {
                            return Err(refused(
                                "bad_claims",
                                format!("{claim} must list room names"),
                            ));
                        };
                        tidings::validate::validate_room(name)
                            .map_err(|e| refused("bad_claims", e.to_string()))?;
                        rooms.push(name.to_string());
                    }
                }
                Some(_) => {
                    return Err(refused(
                        "bad_claims",
                        format!("{claim} must be an array of room names"),
                    ))
                }
            }
        }
        Ok(Verified { identity, rooms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Invocation;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    fn jwt(extra: &[&str]) -> Result<Jwt, SettingError> {
        let mut args: Vec<String> = vec!["--jwt-secret".into(), SECRET.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        match Settings::parse(&args, &|_| None)? {
            Invocation::Run(s) => Jwt::from_settings(&s)?.ok_or(SettingError("no jwt".into())),
            _ => Err(SettingError("not a run".into())),
        }
    }

    fn now() -> u64 {
        unix_now() as u64
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with this header `alg`, HMAC-signed with `secret` (SHA-256, or SHA-384 for HS384).
    fn sign_with(alg: &str, claims: &Value, secret: &str) -> String {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(claims)
        );
        fn mac<D: hmac::EagerHash>(secret: &str, input: &str) -> Vec<u8>
        where
            hmac::Hmac<D>: KeyInit + Mac,
        {
            match hmac::Hmac::<D>::new_from_slice(secret.as_bytes()) {
                Ok(mut m) => {
                    m.update(input.as_bytes());
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        let sig = if alg == "HS384" {
            mac::<sha2::Sha384>(secret, &input)
        } else {
            mac::<Sha256>(secret, &input)
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn sign(claims: &Value, secret: &str) -> String {
        sign_with("HS256", claims, secret)
    }

    fn code(r: Result<Verified, TokenError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn a_good_token_names_user_tenant_and_rooms() -> Result<(), SettingError> {
        let j = jwt(&["--jwt-rooms-claim", "rooms"])?;
        let t = sign(
            &json!({"sub": "alice", "tenant": "acme", "exp": now() + 60, "rooms": ["r1", "r2"]}),
            SECRET,
        );
        let v = j.verify(&t).map_err(|e| SettingError(e.message))?;
        assert_eq!(v.identity, Identity::new("acme", "alice"));
        assert_eq!(v.rooms, vec!["r1", "r2"]);
        // No tenant claim: the default tenant.
        let t = sign(&json!({"sub": "bob", "exp": now() + 60}), SECRET);
        let v = j.verify(&t).map_err(|e| SettingError(e.message))?;
        assert_eq!(v.identity, Identity::new("", "bob"));
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() -> Result<(), SettingError> {
        let j = jwt(&[])?;
        let exp = now() + 60;
        let ok = |c: &Value| code(j.verify(&sign(c, SECRET)));
        assert_eq!(ok(&json!({"sub": "a", "exp": exp})), "ok");
        assert_eq!(ok(&json!({"sub": "a", "exp": now() - 10})), "token_expired");
        assert_eq!(
            ok(&json!({"sub": "a", "exp": exp, "nbf": now() + 100})),
            "token_not_yet_valid"
        );
        assert_eq!(ok(&json!({"sub": "a", "exp": exp, "nbf": now() - 1})), "ok");
        assert_eq!(ok(&json!({"sub": "a", "exp": "soon"})), "bad_claims");
        assert_eq!(
            code(j.verify(&sign(
                &json!({"sub": "a", "exp": exp}),
                "another-secret-32-bytes-long!!!!"
            ))),
            "bad_signature"
        );
        assert_eq!(ok(&json!({"sub": "a"})), "missing_claim");
        assert_eq!(ok(&json!({"exp": exp})), "missing_claim");
        assert_eq!(ok(&json!({"sub": "", "exp": exp})), "bad_claims");
        assert_eq!(ok(&json!({"sub": 7, "exp": exp})), "bad_claims");
        assert_eq!(
            ok(&json!({"sub": "a", "tenant": 1, "exp": exp})),
            "bad_claims"
        );
        assert_eq!(code(j.verify("not.a.jwt")), "malformed_token");
        assert_eq!(code(j.verify("")), "malformed_token");
        assert_eq!(code(j.verify("a.b.c.d")), "malformed_token");
        // A good token with its claims swapped for others: the signature no longer verifies.
        let good = sign(&json!({"sub": "a", "exp": exp}), SECRET);
        let pieces: Vec<&str> = good.split('.').collect();
        let forged = b64(&json!({"sub": "admin", "exp": exp}));
        let (head, sig) = (pieces.first().copied(), pieces.get(2).copied());
        let forged = format!("{}.{forged}.{}", head.unwrap_or(""), sig.unwrap_or(""));
        assert_eq!(code(j.verify(&forged)), "bad_signature");
        // alg none: a header and claims with an empty signature.
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&json!({"sub": "a", "exp": exp}))
        );
        assert_eq!(code(j.verify(&none)), "alg_none");
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "NONE"})),
            b64(&json!({"sub": "a", "exp": exp}))
        );
        assert_eq!(code(j.verify(&none)), "alg_none");
        // HS384 with the same secret: the wrong algorithm.
        assert_eq!(
            code(j.verify(&sign_with(
                "HS384",
                &json!({"sub": "a", "exp": exp}),
                SECRET
            ))),
            "wrong_algorithm"
        );
        // An audience nobody configured.
        assert_eq!(
            ok(&json!({"sub": "a", "exp": exp, "aud": "x"})),
            "wrong_audience"
        );
        Ok(())
    }

    #[test]
    fn expiry_honours_the_leeway_and_is_exclusive() -> Result<(), SettingError> {
        let j = jwt(&[])?;
        let t = sign(&json!({"sub": "a", "exp": 1000}), SECRET);
        assert_eq!(code(j.verify_at(&t, 999.5)), "ok");
        assert_eq!(code(j.verify_at(&t, 1000.0)), "token_expired");
        let lenient = jwt(&["--jwt-leeway-s", "30"])?;
        assert_eq!(code(lenient.verify_at(&t, 1029.0)), "ok");
        assert_eq!(code(lenient.verify_at(&t, 1030.0)), "token_expired");
        Ok(())
    }

    #[test]
    fn issuer_and_audience_when_configured() -> Result<(), SettingError> {
        let j = jwt(&[
            "--jwt-issuer",
            "https://auth.example",
            "--jwt-audience",
            "tidings",
        ])?;
        let exp = now() + 60;
        let c = |v: &Value| code(j.verify(&sign(v, SECRET)));
        assert_eq!(
            c(&json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "tidings"})),
            "ok"
        );
        assert_eq!(
            c(
                &json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": ["x", "tidings"]})
            ),
            "ok"
        );
        assert_eq!(
            c(&json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "tidings"})),
            "wrong_issuer"
        );
        assert_eq!(
            c(&json!({"sub": "a", "exp": exp, "aud": "tidings"})),
            "missing_claim"
        );
        assert_eq!(
            c(&json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "other"})),
            "wrong_audience"
        );
        assert_eq!(
            c(&json!({"sub": "a", "exp": exp, "iss": "https://auth.example"})),
            "missing_claim"
        );
        Ok(())
    }

    #[test]
    fn weak_or_contradictory_key_settings_are_refused() {
        assert!(jwt(&["--jwt-algorithm", "RS256"]).is_err());
        let short = Settings::parse(&["--jwt-secret".into(), "only-sixteen-byt".into()], &|_| {
            None
        });
        let refused = match short {
            Ok(Invocation::Run(s)) => Jwt::from_settings(&s).is_err(),
            _ => false,
        };
        assert!(refused);
    }
}
