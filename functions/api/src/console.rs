//! The console: the pages a person uses to configure streaming, read events and mend delivery,
//! served by this function under `/console/` on routes without the JWT authorizer. They are
//! static files compiled into the binary; every call they make goes to the API with the
//! person's token, so the console holds no power the API does not check.

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use http::{HeaderValue, Method, header};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::LazyLock;

pub const PREFIX: &str = "/console";

/// How the console signs a person in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// No client id is configured: the console says how to configure one.
    Off,
    /// The stack's OpenID Connect issuer, authorization code with PKCE, as a public client.
    Oidc { issuer: String, client_id: String },
    /// `./scripts/local --serve`: no token; the API takes the development organization header.
    Development,
}

impl SignIn {
    /// The OpenID Connect client `CONSOLE_ISSUER` and `CONSOLE_CLIENT_ID` name, if both are set.
    pub fn oidc_from_env() -> Option<SignIn> {
        use audit_log::settings::{env, optional_env};
        Some(SignIn::Oidc {
            issuer: optional_env(env::CONSOLE_ISSUER)?,
            client_id: optional_env(env::CONSOLE_CLIENT_ID)?,
        })
    }
}

/// One static file of the console, as `build.rs` gzipped it.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    gzip: &'static [u8],
}

impl Asset {
    /// The file as written, for a client that takes no gzip.
    fn text(&self) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(self.gzip)
            .read_to_string(&mut text)
            .expect("build.rs gzipped the console's text");
        text
    }
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/console/", $name, ".gz")),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The console's files: `console.js` starts it, each page is an ES module of its own and
/// imports the others by relative name.
const ASSETS: [Asset; 16] = [
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("console.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("sign-in.js", JS),
    asset!("router.js", JS),
    asset!("start.js", JS),
    asset!("logs.js", JS),
    asset!("streaming-panel.js", JS),
    asset!("events.js", JS),
    asset!("export.js", JS),
    asset!("look.js", JS),
    asset!("menu.js", JS),
    asset!("chart.js", JS),
    asset!("streaming.js", JS),
    asset!("problems.js", JS),
];

/// A digest of every file: they are served under `assets/<version>/`, so a browser may keep
/// them for a year and a new deployment's are new addresses, relative imports included.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    for asset in &ASSETS {
        digest.update(asset.name.as_bytes());
        digest.update([0]);
        digest.update(asset.gzip);
        digest.update([0]);
    }
    digest.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
});

/// The page, pointing at the current version's files (`{{version}}` in the file).
static INDEX: LazyLock<String> =
    LazyLock::new(|| include_str!("../console/index.html").replace("{{version}}", &VERSION));

/// The customer role's policies, as `infra/` applies them: the console fills them in.
const ROLE_POLICY: &str = include_str!("../../../infra/terraform/customer-role/policy.json.tftpl");
const ROLE_TRUST_POLICY: &str =
    include_str!("../../../infra/terraform/customer-role/trust-policy.json.tftpl");

pub fn is_console(path: &str) -> bool {
    path == PREFIX || path.starts_with("/console/")
}

/// A read of the console's page (the document whose policy says where it may connect).
pub fn is_page(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && matches!(path, "/console/" | "/console/index.html")
}

/// What the console needs to know before it calls the API.
pub struct ConsoleSettings<'a> {
    pub sign_in: &'a SignIn,
    pub log_group_prefix: &'a str,
    /// The origin of the issuer's token endpoint, where it is not the issuer's own.
    pub token_origin: Option<&'a str>,
}

/// The origin of the issuer's token endpoint, which the page posts the sign-in code to: many
/// issuers keep it on another host (Google's on `oauth2.googleapis.com`, a Cognito user pool's
/// on its custom domain), and the page's policy lets it connect nowhere it was not told of. It
/// is found as the page finds it, from the issuer's discovery document, once per container
/// (after a failure, asked again only once `retry_after` has passed: pages are not held up by
/// an issuer the function cannot reach).
#[derive(Debug)]
pub struct TokenEndpoint {
    found: std::sync::OnceLock<String>,
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
    retry_after: std::time::Duration,
}

impl Default for TokenEndpoint {
    fn default() -> Self {
        Self {
            found: std::sync::OnceLock::new(),
            failed_at: std::sync::Mutex::new(None),
            // Short: a page served while it is unknown cannot finish a sign-in whose token
            // endpoint is elsewhere, so a brief failure must not hold for long.
            retry_after: std::time::Duration::from_secs(30),
        }
    }
}

impl TokenEndpoint {
    /// Asks again this long after a failure (tests: at once).
    pub fn retrying_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = wait;
        self
    }

    /// Found already.
    pub fn known(&self) -> Option<&str> {
        self.found.get().map(String::as_str)
    }

    /// Found now if it was not yet; `None` when the issuer's document cannot be read or names
    /// none (the page then connects to the issuer's origin only, and a token endpoint
    /// elsewhere fails to sign in until it can be read).
    pub async fn origin(&self, sign_in: &SignIn) -> Option<&str> {
        if let Some(found) = self.known() {
            return Some(found);
        }
        let SignIn::Oidc { issuer, .. } = sign_in else {
            return None;
        };
        let failed_at = || self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        let last_failure = *failed_at();
        if last_failure.is_some_and(|at| at.elapsed() < self.retry_after) {
            return None;
        }
        match discover_token_origin(issuer).await {
            Ok(found) => Some(self.found.get_or_init(|| found)),
            Err(reason) => {
                *failed_at() = Some(std::time::Instant::now());
                tracing::warn!(%reason, "the issuer's token endpoint could not be found; the console may connect to the issuer's origin only");
                None
            }
        }
    }
}

/// How long the page's first request waits for the issuer's discovery document, at most.
const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The origin of the token endpoint named by the issuer's discovery document (the address
/// `sign-in.js` reads it from).
async fn discover_token_origin(issuer: &str) -> Result<String, String> {
    // Redirects followed as the page's own `fetch` follows them.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .connect_timeout(std::time::Duration::from_secs(1))
        .timeout(DISCOVERY_TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client ({e})"))?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let answer = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("reading {url}: {e}"))?;
    let body = answer
        .bytes()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Discovery {
        token_endpoint: String,
    }
    let discovery: Discovery =
        serde_json::from_slice(&body).map_err(|e| format!("{url} names no token endpoint: {e}"))?;
    origin(&discovery.token_endpoint)
        .ok_or_else(|| format!("{url} names a token endpoint that is not an http(s) URL"))
}

/// Whether an `Accept-Encoding` header takes gzip: named (`gzip`, `x-gzip`), or else `*`, with
/// a weight above 0 (RFC 9110, 12.5.3: a coding named overrides `*`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let (mut named, mut any) = (None, None);
    for coding in accept_encoding.split(',') {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let taken = !parts.any(|p| {
            p.split_once('=')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, q)| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            named = Some(named.unwrap_or(false) || taken);
        } else if name == "*" {
            any = Some(taken);
        }
    }
    named.or(any).unwrap_or(false)
}

/// Answers a request under `/console`; its files gzipped when the client takes gzip.
pub fn respond(
    method: &Method,
    path: &str,
    query: &str,
    gzip: bool,
    settings: &ConsoleSettings,
) -> ApiGatewayV2httpResponse {
    if method != Method::GET && method != Method::HEAD {
        return text(
            405,
            "text/plain; charset=utf-8",
            "the console only answers GET",
        )
        .with_header(header::ALLOW, "GET, HEAD");
    }
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let mut response = match rest {
        // Relative links in the page resolve against `/console/`, never `/`.
        "" => {
            let to = match query {
                "" => "/console/".to_owned(),
                query => format!("/console/?{query}"),
            };
            text(308, "text/plain; charset=utf-8", "").with_header(header::LOCATION, &to)
        }
        "/" | "/index.html" => text(200, "text/html; charset=utf-8", &INDEX)
            .with_header(header::CACHE_CONTROL, "no-cache"),
        "/config.json" => crate::json_response(200, &config(settings))
            .with_header(header::CACHE_CONTROL, "no-store"),
        _ => match rest
            .strip_prefix("/assets/")
            .and_then(|file| file.strip_prefix(VERSION.as_str()))
            .and_then(|file| file.strip_prefix('/'))
            .and_then(|name| ASSETS.iter().find(|a| a.name == name))
        {
            Some(asset) => file(asset, gzip)
                .with_header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
                .with_header(header::VARY, "Accept-Encoding"),
            None => text(
                404,
                "text/plain; charset=utf-8",
                "no such page in the console",
            ),
        },
    };
    let csp = content_security_policy(settings.sign_in, settings.token_origin);
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp.as_str()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // The sign-in code sits in the address for a moment: it is never sent anywhere else.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Sign-in codes and tokens go through this host: HTTPS only, for a year (a browser
        // heeds it only from an HTTPS answer, so the local runner's plain HTTP is untouched).
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        response = response.with_header(name, value);
    }
    if method == Method::HEAD {
        response.body = None;
    }
    response
}

/// Scripts and styles only from the console's own files: no inline script, no `eval`, no
/// other origin but the sign-in issuer's and its token endpoint's (`token_origin`, as its
/// discovery document names it) for the token exchange.
pub fn content_security_policy(sign_in: &SignIn, token_origin: Option<&str>) -> String {
    let mut connect = vec!["'self'".to_owned()];
    if let SignIn::Oidc { issuer, .. } = sign_in {
        if let Some(o) = origin(issuer) {
            // A Cognito user pool's token endpoint is on its domain, not on the issuer's host,
            // even when its discovery document cannot be read.
            if let Some(region) = cognito_region(&o) {
                connect.push(format!("https://*.auth.{region}.amazoncognito.com"));
            }
            connect.insert(1, o);
        }
        // Checked again: the policy is a header, and the document is the issuer's word.
        if let Some(o) = token_origin.and_then(origin)
            && !connect.contains(&o)
        {
            connect.push(o);
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        connect.join(" ")
    )
}

/// `https://host[:port]` of a URL, or nothing when it is not one.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let safe = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    (matches!(scheme, "https" | "http") && !host.is_empty() && host.chars().all(safe))
        .then(|| format!("{scheme}://{host}"))
}

/// The region of a Cognito user pool's issuer origin (`https://cognito-idp.<region>.amazonaws.com`).
fn cognito_region(origin: &str) -> Option<&str> {
    let region = origin
        .strip_prefix("https://cognito-idp.")?
        .strip_suffix(".amazonaws.com")?;
    (!region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    .then_some(region)
}

fn config(settings: &ConsoleSettings) -> serde_json::Value {
    let sign_in = match settings.sign_in {
        SignIn::Off => json!({"mode": "off"}),
        SignIn::Development => json!({"mode": "development"}),
        SignIn::Oidc { issuer, client_id } => {
            json!({"mode": "oidc", "issuer": issuer, "client_id": client_id})
        }
    };
    let regions: serde_json::Map<String, serde_json::Value> =
        audit_log::destination::cloudwatch::regions::PARTITIONS
            .iter()
            .map(|(partition, regions)| ((*partition).to_owned(), json!(regions)))
            .collect();
    json!({
        "sign_in": sign_in,
        "log_group_prefix": settings.log_group_prefix,
        "regions": regions,
        "datadog_sites": <audit_log::destination::DatadogSite as strum::VariantNames>::VARIANTS,
        "role_policy": ROLE_POLICY,
        "role_trust_policy": ROLE_TRUST_POLICY,
    })
}

fn text(status: u16, content_type: &'static str, body: &str) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.body = Some(Body::Text(body.to_owned()));
    response
}

fn file(asset: &Asset, gzip: bool) -> ApiGatewayV2httpResponse {
    if !gzip {
        return text(200, asset.content_type, &asset.text());
    }
    let mut response =
        text(200, asset.content_type, "").with_header(header::CONTENT_ENCODING, "gzip");
    response.body = Some(Body::Binary(asset.gzip.to_vec()));
    response.is_base64_encoded = true;
    response
}

trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: &str) -> Self;
}

impl WithHeader for ApiGatewayV2httpResponse {
    fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(name, value);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, sign_in: &SignIn) -> ApiGatewayV2httpResponse {
        get_with(path, sign_in, false)
    }

    fn get_with(path: &str, sign_in: &SignIn, gzip: bool) -> ApiGatewayV2httpResponse {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        respond(
            &Method::GET,
            path,
            query,
            gzip,
            &ConsoleSettings {
                sign_in,
                log_group_prefix: "/hashicorp",
                token_origin: None,
            },
        )
    }

    fn body(r: &ApiGatewayV2httpResponse) -> &str {
        match &r.body {
            Some(Body::Text(t)) => t,
            _ => "",
        }
    }

    fn header<'a>(r: &'a ApiGatewayV2httpResponse, name: &str) -> &'a str {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn the_page_names_its_files_by_their_version_and_they_are_cached_for_a_year() {
        let page = get("/console/", &SignIn::Off);
        assert_eq!(page.status_code, 200);
        assert_eq!(header(&page, "cache-control"), "no-cache");
        assert!(!body(&page).contains("{{"), "{}", body(&page));
        for name in ["console.js", "console.css"] {
            assert!(body(&page).contains(&format!("assets/{}/{name}", *VERSION)));
        }
        for asset in &ASSETS {
            let served = get(
                &format!("/console/assets/{}/{}", *VERSION, asset.name),
                &SignIn::Off,
            );
            assert_eq!(served.status_code, 200, "{}", asset.name);
            let written = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("console")
                    .join(asset.name),
            )
            .unwrap();
            assert_eq!(body(&served), written);
            assert_eq!(header(&served, "content-encoding"), "");
            assert_eq!(header(&served, "vary"), "Accept-Encoding");
            assert!(header(&served, "cache-control").contains("immutable"));
            // The same file, gzipped, to a client that takes gzip.
            let gzipped = get_with(
                &format!("/console/assets/{}/{}", *VERSION, asset.name),
                &SignIn::Off,
                true,
            );
            assert_eq!(header(&gzipped, "content-encoding"), "gzip");
            assert_eq!(header(&gzipped, "vary"), "Accept-Encoding");
            assert_eq!(header(&gzipped, "content-type"), asset.content_type);
            assert!(gzipped.is_base64_encoded);
            let Some(Body::Binary(bytes)) = &gzipped.body else {
                panic!("{}: a binary body", asset.name)
            };
            let mut unpacked = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut unpacked)
                .unwrap();
            assert_eq!(unpacked, written);
            assert!(bytes.len() < written.len(), "{}", asset.name);
            // Another version's address (an old deployment's) is no file of this one.
            let stale = get(
                &format!("/console/assets/000000000000/{}", asset.name),
                &SignIn::Off,
            );
            assert_eq!(stale.status_code, 404);
        }
    }

    #[test]
    fn gzip_is_sent_only_to_a_client_that_takes_it() {
        for (header, takes) in [
            ("gzip, deflate, br, zstd", true),
            ("GZIP", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("*", true),
            ("", false),
            ("identity", false),
            ("br, zstd", false),
            ("gzip;q=0", false),
            ("gzip; q=0.000, br", false),
            ("gzip;Q=0", false),
            ("x-gzip2", false),
            ("x-gzip", true),
            // Named, gzip's own weight counts, whatever `*` says.
            ("gzip;q=0, *", false),
            ("*;q=0, gzip", true),
            ("br, *;q=0", false),
        ] {
            assert_eq!(accepts_gzip(header), takes, "{header:?}");
        }
    }

    #[test]
    fn every_module_the_console_imports_is_served() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.text().lines().filter(|l| l.starts_with("import ")) {
                let imported = line
                    .rsplit_once("from \"./")
                    .and_then(|(_, rest)| rest.strip_suffix("\";"))
                    .unwrap_or_else(|| panic!("{}: a relative import: {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == imported),
                    "{} imports {imported}, which is not served",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn every_answer_carries_a_policy_that_runs_no_inline_script() {
        for path in [
            "/console/",
            "/console/config.json",
            "/console/nothing",
            "/console",
        ] {
            let r = get(path, &SignIn::Development);
            let csp = header(&r, "content-security-policy");
            assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(header(&r, "x-content-type-options"), "nosniff");
            assert_eq!(header(&r, "strict-transport-security"), "max-age=31536000");
        }
        assert_eq!(get("/console", &SignIn::Off).status_code, 308);
        // The project the address named survives the missing slash.
        let moved = get("/console?organization_id=o&project_id=p", &SignIn::Off);
        assert_eq!(
            header(&moved, "location"),
            "/console/?organization_id=o&project_id=p"
        );
        assert_eq!(get("/console/nothing", &SignIn::Off).status_code, 404);
        let post = respond(
            &Method::POST,
            "/console/",
            "",
            false,
            &ConsoleSettings {
                sign_in: &SignIn::Off,
                log_group_prefix: "/hashicorp",
                token_origin: None,
            },
        );
        assert_eq!(post.status_code, 405);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = get("/console/", &SignIn::Off);
        let html = body(&page);
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{html}"
        );
        let handler = html
            .split(|c: char| c.is_whitespace() || c == '<')
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "no inline handlers");
    }

    #[test]
    fn the_issuer_and_its_token_endpoint_alone_are_added_to_where_the_page_may_connect() {
        let oidc = SignIn::Oidc {
            issuer: "https://auth.example.com/tenant/".into(),
            client_id: "console".into(),
        };
        let csp = content_security_policy(&oidc, None);
        assert!(
            csp.contains("connect-src 'self' https://auth.example.com;"),
            "{csp}"
        );
        let google = SignIn::Oidc {
            issuer: "https://accounts.google.com".into(),
            client_id: "console".into(),
        };
        let csp = content_security_policy(&google, Some("https://oauth2.googleapis.com"));
        assert!(
            csp.contains(
                "connect-src 'self' https://accounts.google.com https://oauth2.googleapis.com;"
            ),
            "{csp}"
        );
        // Named once when it is the issuer's own; never when it is not an origin, or for a
        // console that signs no one in.
        let same = content_security_policy(&oidc, Some("https://auth.example.com"));
        assert!(
            same.contains("connect-src 'self' https://auth.example.com;"),
            "{same}"
        );
        let odd = content_security_policy(&oidc, Some("https://x.example.com; script-src *"));
        assert!(
            odd.contains("connect-src 'self' https://auth.example.com;"),
            "{odd}"
        );
        let local = content_security_policy(&SignIn::Development, Some("https://x.example.com"));
        assert!(local.contains("connect-src 'self';"), "{local}");
        let cognito = SignIn::Oidc {
            issuer: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf".into(),
            client_id: "console".into(),
        };
        assert!(
            content_security_policy(&cognito, None).contains(
                "connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com \
                 https://*.auth.eu-west-1.amazoncognito.com;"
            ),
            "{}",
            content_security_policy(&cognito, None)
        );
        let hostile = SignIn::Oidc {
            issuer: "https://a.example.com; script-src *".into(),
            client_id: "c".into(),
        };
        assert!(content_security_policy(&hostile, None).contains("connect-src 'self';"));
        let config: serde_json::Value =
            serde_json::from_str(body(&get("/console/config.json", &oidc))).unwrap();
        assert_eq!(config["sign_in"]["mode"], "oidc");
        assert_eq!(config["sign_in"]["client_id"], "console");
        assert_eq!(config["datadog_sites"][0], "datadoghq.com");
        assert!(
            config["regions"]["aws"]
                .as_array()
                .unwrap()
                .contains(&json!("us-west-2"))
        );
        assert!(
            config["role_trust_policy"]
                .as_str()
                .unwrap()
                .contains("${external_id}")
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_is_found_once_from_the_issuers_discovery_document() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let issuer = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/tenant/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": format!("{}/tenant", issuer.uri()),
                "authorization_endpoint": "https://login.example.com/authorize",
                "token_endpoint": "https://tokens.example.com:8443/oauth2/token",
            })))
            .expect(1)
            .mount(&issuer)
            .await;
        let sign_in = SignIn::Oidc {
            issuer: format!("{}/tenant/", issuer.uri()),
            client_id: "console".into(),
        };
        let endpoint = TokenEndpoint::default();
        for _ in 0..2 {
            assert_eq!(
                endpoint.origin(&sign_in).await,
                Some("https://tokens.example.com:8443")
            );
        }
        // A console that signs no one in asks no one.
        assert_eq!(TokenEndpoint::default().origin(&SignIn::Off).await, None);
    }

    #[tokio::test]
    async fn an_issuer_whose_document_cannot_be_read_is_asked_again_after_a_while() {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let issuer = MockServer::start().await;
        let sign_in = SignIn::Oidc {
            issuer: issuer.uri(),
            client_id: "console".into(),
        };
        let mount = |body: serde_json::Value| {
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .up_to_n_times(1)
        };
        // Nothing there: not asked again for a while, even once there is.
        let waiting = TokenEndpoint::default();
        assert_eq!(waiting.origin(&sign_in).await, None);
        let named = json!({"token_endpoint": format!("{}/token", issuer.uri())});
        mount(named.clone()).mount(&issuer).await;
        assert_eq!(waiting.origin(&sign_in).await, None);
        assert_eq!(issuer.received_requests().await.unwrap().len(), 1);
        issuer.reset().await;
        // Asked again when the while has passed: a document that names no token endpoint,
        // then one that does.
        let endpoint = TokenEndpoint::default().retrying_after(std::time::Duration::ZERO);
        mount(json!({"issuer": issuer.uri()})).mount(&issuer).await;
        assert_eq!(endpoint.origin(&sign_in).await, None);
        mount(named).mount(&issuer).await;
        assert_eq!(endpoint.origin(&sign_in).await, Some(issuer.uri().as_str()));
    }
}
