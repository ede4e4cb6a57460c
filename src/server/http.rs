//! One request to the endpoint, start to finish: which campaign it is for, whether its token
//! is the donor's, what the body says, and the page sent back.
//!
//! Owns the status codes and the pages a donor sees. It never writes the list itself
//! ([`super::list`] does, off the async thread), never redirects, never sets or reads a
//! cookie, and never puts the query string, the token or the full address in a log line:
//! [`Outcome::log_line`] names the campaign and the address's domain only.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::email::{Address, normalise};
use crate::exit::escape_controls;

use super::Shared;
use super::route::{Query, Served};

/// The form field and value RFC 8058 has mail clients POST.
const FIELD: &str = "List-Unsubscribe";
const ONE_CLICK: &str = "One-Click";

/// How much of a request path a log line keeps: paths are the client's text.
const MAX_LOGGED_PATH: usize = 120;

/// What became of one request.
enum Outcome {
    /// GET with a valid link: the page with the button.
    Confirm {
        campaign: String,
        address: String,
        action: String,
    },
    /// POST with a valid link and body: the address is on the list, synced.
    Done { campaign: String, address: String },
    /// Refused before anything was written.
    Refused(Refusal),
    /// A valid unsubscribe that could not be recorded: 500, and why, for the log.
    Failed { campaign: String, error: String },
}

/// Why a request was refused: its status, a sentence for the donor and one for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoSuchPath,
    Method,
    BadEncoding,
    MissingOrRepeated,
    NotAnAddress,
    NotServed,
    BadToken,
    TooLarge,
    SlowBody,
    Unreadable,
    NotOneClick,
}

/// The donor's sentence for every damaged link: which part is damaged helps only a forger.
const DAMAGED: &str = "This unsubscribe link is incomplete or damaged. Copy the whole link from the email, or use the unsubscribe link in a newer email.";

impl Refusal {
    fn status(self) -> StatusCode {
        use Refusal::*;
        match self {
            NoSuchPath | NotServed => StatusCode::NOT_FOUND,
            Method => StatusCode::METHOD_NOT_ALLOWED,
            BadEncoding | MissingOrRepeated | NotAnAddress | Unreadable | NotOneClick => {
                StatusCode::BAD_REQUEST
            }
            BadToken => StatusCode::FORBIDDEN,
            TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SlowBody => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn page(self) -> &'static str {
        use Refusal::*;
        match self {
            NoSuchPath => "There is no unsubscribe page at this address.",
            Method => "This page only answers GET and POST.",
            BadEncoding | MissingOrRepeated | NotAnAddress => DAMAGED,
            NotServed => {
                "Unsubscribe links of this campaign are not handled here any more. Reply to the email to ask to be removed."
            }
            BadToken => {
                "This unsubscribe link is not valid. Copy the whole link from the email, or use the unsubscribe link in a newer email."
            }
            TooLarge => "This request is too large for an unsubscribe.",
            SlowBody => "The request took too long to arrive; try again.",
            Unreadable => "The request could not be read; try again.",
            NotOneClick => {
                "This address only accepts the unsubscribe button's request (List-Unsubscribe=One-Click)."
            }
        }
    }

    /// For the operator: what to look at when many requests are refused alike.
    fn reason(self) -> &'static str {
        use Refusal::*;
        match self {
            NoSuchPath => "no campaign is served at this path",
            Method => "not GET or POST",
            BadEncoding => "the query is not percent-encoded UTF-8",
            MissingOrRepeated => "the campaign, address or token parameter is missing or repeated",
            NotAnAddress => "the address parameter is not an address",
            NotServed => "its campaign id is not one of the --campaign files at this path",
            BadToken => {
                "the token is not this address's (if every link gets this, the secret differs from the one the campaign was sent with)"
            }
            TooLarge => "the body is over the size limit",
            SlowBody => "the body did not arrive in time",
            Unreadable => "the body could not be read",
            NotOneClick => "the body is not List-Unsubscribe=One-Click",
        }
    }
}

/// Answers one request and logs one line about it.
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let outcome = match respond(&shared, req).await {
        Ok(o) => o,
        Err(r) => Outcome::Refused(r),
    };
    (shared.log)(&outcome.log_line(&method, &path));
    Ok(outcome.into_response())
}

async fn respond(shared: &Arc<Shared>, req: Request<Incoming>) -> Result<Outcome, Refusal> {
    let served = shared
        .routes
        .at(req.uri().path())
        .ok_or(Refusal::NoSuchPath)?;
    let is_post = match *req.method() {
        Method::GET => false,
        Method::POST => true,
        _ => return Err(Refusal::Method),
    };
    let query = Query::parse(req.uri().query().unwrap_or("")).map_err(|_| Refusal::BadEncoding)?;
    let (campaign, link) = find_link(served, &query)?;
    let address = Address::parse(link.email).map_err(|_| Refusal::NotAnAddress)?;
    let address = normalise(&address);
    let id = campaign.id.as_str();
    if !shared.secret.verify(id, &address, link.token) {
        return Err(Refusal::BadToken);
    }
    if !is_post {
        let action = req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |pq| pq.as_str().to_owned());
        return Ok(Outcome::Confirm {
            campaign: id.to_owned(),
            address,
            action,
        });
    }
    read_one_click(req, &shared.limits).await?;
    let writer = Arc::clone(shared);
    let line = address.clone();
    let appended = tokio::task::spawn_blocking(move || writer.list.append(&line)).await;
    let campaign = id.to_owned();
    Ok(match appended {
        Ok(Ok(())) => Outcome::Done { campaign, address },
        Ok(Err(e)) => Outcome::Failed {
            campaign,
            error: e.to_string(),
        },
        Err(e) => Outcome::Failed {
            campaign,
            error: format!("internal: the append task failed: {e}"),
        },
    })
}

/// The parts of a request's query that make a link.
struct Link<'q> {
    email: &'q str,
    token: &'q str,
}

/// The campaign at this path whose id the query names, with the address and token.
fn find_link<'a, 'q>(
    served: &'a [Served],
    query: &'q Query,
) -> Result<(&'a Served, Link<'q>), Refusal> {
    let mut names_one = false;
    for s in served {
        let value = query
            .one(&s.route.campaign_param)
            .map_err(|_| Refusal::MissingOrRepeated)?;
        let Some(value) = value else { continue };
        names_one = true;
        if value != s.id.as_str() {
            continue;
        }
        return match (
            query.one(&s.route.email_param),
            query.one(&s.route.token_param),
        ) {
            (Ok(Some(email)), Ok(Some(token))) => Ok((s, Link { email, token })),
            _ => Err(Refusal::MissingOrRepeated),
        };
    }
    Err(if names_one {
        Refusal::NotServed
    } else {
        Refusal::MissingOrRepeated
    })
}

/// Reads the body, within its size and time limits, and checks it is RFC 8058's.
async fn read_one_click(req: Request<Incoming>, limits: &super::Limits) -> Result<(), Refusal> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(Refusal::TooLarge);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let body = match tokio::time::timeout(limits.body_timeout, body.collect()).await {
        Err(_elapsed) => return Err(Refusal::SlowBody),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Refusal::TooLarge);
        }
        Ok(Err(_)) => return Err(Refusal::Unreadable),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if is_one_click(content_type.as_deref(), &body) {
        Ok(())
    } else {
        Err(Refusal::NotOneClick)
    }
}

/// Whether the body carries `List-Unsubscribe=One-Click`, form-urlencoded (what mail clients
/// and the page's button send) or as multipart/form-data (which RFC 8058 allows too).
pub(super) fn is_one_click(content_type: Option<&str>, body: &[u8]) -> bool {
    let multipart = content_type.and_then(|ct| {
        let (kind, params) = ct.split_once(';').unwrap_or((ct, ""));
        kind.trim()
            .eq_ignore_ascii_case("multipart/form-data")
            .then(|| boundary(params))
    });
    match multipart {
        Some(Some(b)) => multipart_one_click(&b, body),
        Some(None) => false,
        None => std::str::from_utf8(body).is_ok_and(|text| {
            text.trim_end_matches(['\r', '\n'])
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .any(|(n, v)| form_decode(n) == FIELD && form_decode(v) == ONE_CLICK)
        }),
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space here, unlike in the URL.
fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    super::route::percent_decode(&spaced).unwrap_or(spaced)
}

/// The `boundary` parameter of a multipart content type, unquoted.
fn boundary(params: &str) -> Option<String> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned()
        })
    })
}

/// Whether a multipart body has a part named `List-Unsubscribe` whose content is `One-Click`.
fn multipart_one_click(boundary: &str, body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    if boundary.is_empty() {
        return false;
    }
    let delimiter = format!("--{boundary}");
    text.split(delimiter.as_str())
        .skip(1)
        .take_while(|part| !part.starts_with("--"))
        .any(|part| {
            let part = part.trim_start_matches(['\r', '\n']);
            let split = part
                .find("\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| part.find("\n\n").map(|i| (i, 2)));
            let Some((i, sep)) = split else {
                return false;
            };
            let (headers, content) = (&part[..i], &part[i + sep..]);
            let named = headers.lines().any(|h| {
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                k.trim().eq_ignore_ascii_case("content-disposition")
                    && v.split(';').any(|p| {
                        p.split_once('=').is_some_and(|(k, v)| {
                            k.trim().eq_ignore_ascii_case("name")
                                && v.trim().trim_matches('"') == FIELD
                        })
                    })
            });
            named && content.trim_end_matches(['\r', '\n']) == ONE_CLICK
        })
}

impl Outcome {
    fn status(&self) -> StatusCode {
        match self {
            Outcome::Confirm { .. } | Outcome::Done { .. } => StatusCode::OK,
            Outcome::Refused(r) => r.status(),
            Outcome::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `POST /unsubscribe 200 campaign=spring-gala-2026 domain=example.org`: never the query,
    /// the token or the address's local part.
    fn log_line(&self, method: &Method, path: &str) -> String {
        let method: String = method.as_str().chars().take(16).collect();
        let escaped = escape_controls(path);
        let mut path: String = escaped.chars().take(MAX_LOGGED_PATH).collect();
        if path.len() < escaped.len() {
            path.push('…');
        }
        let status = self.status().as_u16();
        let domain = |a: &str| a.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
        match self {
            Outcome::Confirm {
                campaign, address, ..
            }
            | Outcome::Done { campaign, address } => format!(
                "{method} {path} {status} campaign={campaign} domain={}",
                domain(address)
            ),
            Outcome::Refused(r) => format!("{method} {path} {status} {}", r.reason()),
            Outcome::Failed { campaign, error } => {
                format!("{method} {path} {status} campaign={campaign} error: {error}")
            }
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let page = match &self {
            Outcome::Confirm {
                address, action, ..
            } => {
                // No campaign name: the list suppresses the address for every later campaign
                // too, so the page must not suggest it only stops this one.
                page(
                    "Unsubscribe",
                    &format!(
                        "<p>Stop all emails from us to <strong>{}</strong>?</p>\n<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"{FIELD}\" value=\"{ONE_CLICK}\">\n<button type=\"submit\">Unsubscribe</button>\n</form>",
                        html(address),
                        html(action)
                    ),
                )
            }
            Outcome::Done { address, .. } => page(
                "Unsubscribed",
                &format!(
                    "<p><strong>{}</strong> is unsubscribed. Emails already on their way may still arrive in the next few minutes.</p>",
                    html(address)
                ),
            ),
            Outcome::Refused(r) => page("Unsubscribe", &format!("<p>{}</p>", html(r.page()))),
            Outcome::Failed { .. } => page(
                "Unsubscribe",
                "<p>Your unsubscribe could not be recorded just now. Please try again in a few minutes.</p>",
            ),
        };
        let mut resp = Response::new(Full::new(Bytes::from(page)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // The page's URL holds the donor's token: no Referer may carry it elsewhere.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
        h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        resp
    }
}

/// A whole small page.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: 32em; margin: 3em auto; padding: 0 1em\">\n\
         <h1>{title}</h1>\n{body}\n</body></html>\n"
    )
}

/// Text escaped for HTML content and double-quoted attributes.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_click_bodies() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(is_one_click(form, b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(None, b"List-Unsubscribe=One-Click\r\n"));
        assert!(is_one_click(form, b"x=1&List-Unsubscribe=One%2DClick"));
        assert!(!is_one_click(form, b"List-Unsubscribe=one-click"));
        assert!(!is_one_click(form, b""));
        assert!(!is_one_click(form, b"List-Unsubscribe"));
        assert!(!is_one_click(form, b"unsubscribe=yes"));
        assert!(!is_one_click(form, &[0xff, 0xfe]));

        let body = "-----FEDCBA\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n-----FEDCBA--\r\n";
        let mp = Some("multipart/form-data; boundary=---FEDCBA");
        assert!(is_one_click(mp, body.as_bytes()));
        assert!(is_one_click(
            Some("Multipart/Form-Data; boundary=\"---FEDCBA\""),
            body.as_bytes()
        ));
        assert!(!is_one_click(
            mp,
            body.replace("One-Click", "Two-Clicks").as_bytes()
        ));
        assert!(!is_one_click(
            mp,
            body.replace("List-Unsubscribe", "Other").as_bytes()
        ));
        assert!(!is_one_click(Some("multipart/form-data"), body.as_bytes()));
        // A multipart body is not read as a form, nor a form as multipart.
        assert!(!is_one_click(mp, b"List-Unsubscribe=One-Click"));
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let o = Outcome::Confirm {
            campaign: "c".into(),
            address: "\"a<b\"@example.org".into(),
            action: "/u?c=c&e=x\"y".into(),
        };
        let resp = o.into_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::REFERRER_POLICY], "no-referrer");
    }

    #[test]
    fn log_lines_keep_the_address_and_token_out() {
        let done = Outcome::Done {
            campaign: "gala".into(),
            address: "zoe@example.org".into(),
        };
        let line = done.log_line(&Method::POST, "/unsubscribe");
        assert_eq!(
            line,
            "POST /unsubscribe 200 campaign=gala domain=example.org"
        );
        let refused = Outcome::Refused(Refusal::BadToken);
        let long = format!("/{}", "x".repeat(500));
        let line = refused.log_line(&Method::GET, &long);
        assert!(line.len() < 300, "{line}");
        assert!(line.contains("… 403 the token is not"), "{line}");
    }
}
