//! Client tokens: JWTs verified with `jsonwebtoken` (RustCrypto underneath). One algorithm is
//! configured (HS256 with a secret, RS256 or ES256 with a PEM public key) and only that one is
//! accepted: `alg: none` and every other algorithm are refused before any key is used. `exp` is
//! required, `nbf` checked when present, `sub` is the user, a configurable claim the tenant, and
//! an optional claim lists rooms to join.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::Value;
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

/// The configured verifier.
pub struct Jwt {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
    rooms_claim: Option<String>,
}

impl Jwt {
    /// The verifier the settings describe, or `None` when no JWT key is configured.
    pub fn from_settings(s: &Settings) -> Result<Option<Jwt>, SettingError> {
        let secret = s.optional("jwt_secret");
        let key_file = s.optional("jwt_public_key_file");
        let named = s.optional("jwt_algorithm");
        let (algorithm, key) = match (secret, key_file) {
            (None, None) => {
                if named.is_some() {
                    return Err(SettingError(
                        "jwt_algorithm is set but neither jwt_secret nor jwt_public_key_file"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return Err(SettingError(
                    "set jwt_secret or jwt_public_key_file, not both".into(),
                ))
            }
            (Some(secret), None) => {
                if named.as_deref().is_some_and(|a| a != "HS256") {
                    return Err(SettingError(
                        "jwt_secret goes with jwt_algorithm HS256".into(),
                    ));
                }
                if secret.len() < 16 {
                    return Err(SettingError("jwt_secret must be at least 16 bytes".into()));
                }
                let key = DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| SettingError(format!("jwt_secret: {e}")))?;
                (Algorithm::HS256, key)
            }
            (None, Some(path)) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| SettingError(format!("jwt_public_key_file {path}: {e}")))?;
                let bad = |e: jsonwebtoken::errors::Error| {
                    SettingError(format!("jwt_public_key_file {path}: {e}"))
                };
                match named.as_deref() {
                    Some("RS256") => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&pem).map_err(bad)?,
                    ),
                    Some("ES256") => (
                        Algorithm::ES256,
                        DecodingKey::from_ec_pem(&pem).map_err(bad)?,
                    ),
                    _ => {
                        return Err(SettingError(
                            "jwt_public_key_file needs jwt_algorithm RS256 or ES256".into(),
                        ))
                    }
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = s.u64("jwt_leeway_s")?;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = s.optional("jwt_issuer") {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        if let Some(aud) = s.optional("jwt_audience") {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Some(Jwt {
            algorithm,
            key,
            validation,
            tenant_claim: s.str("jwt_tenant_claim").to_string(),
            rooms_claim: s.optional("jwt_rooms_claim"),
        }))
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        // The header's `alg` is looked at first, so that `none` and other algorithms get their
        // own answer (jsonwebtoken refuses them too; this only names the reason).
        let header_alg = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string));
        let Some(alg) = header_alg else {
            return Err(refused("malformed_token", "the token is not a JWT"));
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(refused(
                "alg_none",
                "unsigned tokens (alg none) are refused",
            ));
        }
        if alg != format!("{:?}", self.algorithm) {
            return Err(refused(
                "wrong_algorithm",
                format!("tokens must be signed with {:?}", self.algorithm),
            ));
        }
        let data =
            decode::<Value>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => refused("token_expired", "the token has expired"),
                ErrorKind::ImmatureSignature => {
                    refused("token_not_yet_valid", "the token is not valid yet (nbf)")
                }
                ErrorKind::InvalidSignature => {
                    refused("bad_signature", "the token's signature does not verify")
                }
                ErrorKind::InvalidAlgorithm => {
                    refused("wrong_algorithm", "the token's algorithm is not accepted")
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    refused("missing_claim", format!("the token has no {c} claim"))
                }
                ErrorKind::InvalidIssuer => {
                    refused("wrong_issuer", "the token's issuer is not accepted")
                }
                ErrorKind::InvalidAudience => {
                    refused("wrong_audience", "the token's audience is not accepted")
                }
                _ => refused("malformed_token", "the token cannot be read"),
            })?;
        let claims = data.claims;
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("bad_claims", "sub must be a non-empty string"))?;
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
    use jsonwebtoken::{encode, EncodingKey, Header};
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
        jsonwebtoken::get_current_timestamp()
    }

    fn sign_with(alg: Algorithm, claims: &Value, secret: &str) -> String {
        EncodingKey::from_secret(secret.as_bytes())
            .and_then(|key| encode(&Header::new(alg), claims, &key))
            .unwrap_or_default()
    }

    fn sign(claims: &Value, secret: &str) -> String {
        sign_with(Algorithm::HS256, claims, secret)
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
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() -> Result<(), SettingError> {
        let j = jwt(&[])?;
        let exp = now() + 60;
        assert_eq!(
            code(j.verify(&sign(&json!({"sub": "a", "exp": now() - 10}), SECRET))),
            "token_expired"
        );
        assert_eq!(
            code(j.verify(&sign(
                &json!({"sub": "a", "exp": exp, "nbf": now() + 100}),
                SECRET
            ))),
            "token_not_yet_valid"
        );
        assert_eq!(
            code(j.verify(&sign(
                &json!({"sub": "a", "exp": exp}),
                "another-secret-32-bytes-long!!!"
            ))),
            "bad_signature"
        );
        assert_eq!(
            code(j.verify(&sign(&json!({"sub": "a"}), SECRET))),
            "missing_claim"
        );
        assert_eq!(
            code(j.verify(&sign(&json!({"exp": exp}), SECRET))),
            "missing_claim"
        );
        assert_eq!(
            code(j.verify(&sign(&json!({"sub": "", "exp": exp}), SECRET))),
            "bad_claims"
        );
        assert_eq!(code(j.verify("not.a.jwt")), "malformed_token");
        assert_eq!(code(j.verify("")), "malformed_token");
        // alg none: a header and claims with an empty signature.
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"sub": "a", "exp": exp}))
        );
        assert_eq!(code(j.verify(&none)), "alg_none");
        // HS384 with the same secret: the wrong algorithm.
        let hs384 = sign_with(Algorithm::HS384, &json!({"sub": "a", "exp": exp}), SECRET);
        assert_eq!(code(j.verify(&hs384)), "wrong_algorithm");
        // An audience nobody configured.
        assert_eq!(
            code(j.verify(&sign(&json!({"sub": "a", "exp": exp, "aud": "x"}), SECRET))),
            "wrong_audience"
        );
        Ok(())
    }

    #[test]
    fn weak_or_contradictory_key_settings_are_refused() {
        assert!(jwt(&["--jwt-algorithm", "RS256"]).is_err());
        let short = Settings::parse(&["--jwt-secret".into(), "short".into()], &|_| None);
        let refused = match short {
            Ok(Invocation::Run(s)) => Jwt::from_settings(&s).is_err(),
            _ => false,
        };
        assert!(refused);
    }
}
