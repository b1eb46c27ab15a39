//! JWT authentication (jsonwebtoken) and the per-campaign `REPORT`
//! permission. 401: no/malformed/expired/bad-signature token; 403: a valid
//! token without the permission.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::config::JwtKey;
use crate::error::ApiError;
use secrecy::ExposeSecret;

/// Clock skew tolerated on `exp`/`nbf`, seconds.
const LEEWAY_SECS: u64 = 30;

/// Token claims the service reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(rename = "isSupreme", default)]
    pub is_supreme: bool,
    #[serde(default)]
    pub campaigns: HashMap<String, Vec<String>>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub is_supreme: bool,
    pub campaigns: HashMap<String, Vec<String>>,
}

impl Identity {
    /// `REPORT` on the campaign, or supreme.
    pub fn require_report(&self, campaign_id: &str) -> Result<(), ApiError> {
        let ok = self.is_supreme
            || self
                .campaigns
                .get(campaign_id)
                .is_some_and(|p| p.iter().any(|p| p == "REPORT"));
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "REPORT permission on this campaign is required",
            ))
        }
    }
    pub fn require_supreme(&self) -> Result<(), ApiError> {
        if self.is_supreme {
            Ok(())
        } else {
            Err(ApiError::forbidden("a supreme user is required"))
        }
    }
}

/// Verifies tokens; mints them only for the dev routes (HS256 only).
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
    minting: Option<EncodingKey>,
}

impl Auth {
    pub fn new(key: &JwtKey) -> anyhow::Result<Self> {
        let (key, alg, minting) = match key {
            JwtKey::Secret(s) => (
                DecodingKey::from_secret(s.expose_secret().as_bytes()),
                Algorithm::HS256,
                Some(EncodingKey::from_secret(s.expose_secret().as_bytes())),
            ),
            JwtKey::PublicKeyPem(p) => match DecodingKey::from_rsa_pem(p.as_bytes()) {
                Ok(k) => (k, Algorithm::RS256, None),
                Err(_) => (
                    DecodingKey::from_ec_pem(p.as_bytes())?,
                    Algorithm::ES256,
                    None,
                ),
            },
        };
        // One algorithm: a token signed any other way (or `alg: none`) fails.
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            key,
            validation,
            minting,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let why = match e.kind() {
                    K::ExpiredSignature => "token expired",
                    K::ImmatureSignature => "token not yet valid",
                    K::InvalidSignature => "invalid token signature",
                    K::InvalidAlgorithm => "token algorithm not accepted",
                    _ => "invalid token",
                };
                ApiError::unauthorized(why)
            })?;
        Ok(Identity {
            user_id: data.claims.sub,
            is_supreme: data.claims.is_supreme,
            campaigns: data.claims.campaigns,
        })
    }

    /// Mint a token (dev routes). `None` when the key cannot sign.
    pub fn mint(&self, claims: &Claims) -> Option<String> {
        let key = self.minting.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).ok()
    }
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("malformed authorization header"))?;
        state.auth.verify(token)
    }
}
