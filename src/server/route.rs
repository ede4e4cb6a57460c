//! Where the endpoint finds a campaign's unsubscribe links: the `[message] unsubscribe_url`
//! template read as a fixed path plus the names of the query parameters that carry the
//! campaign id, the address and the token.
//!
//! Owns reading the template's text ([`Route::parse`]), the table of every served campaign by
//! path and id ([`Routes`]), and decoding a request's query ([`Query`]). It never renders a
//! template and never verifies a token: the server's `http` module does that with what this
//! finds.
//!
//! A template the endpoint can serve has fixed text up to the `?` and, in the query, each of
//! the three variables as the whole value of one parameter, with any filters:
//!
//! ```text
//! https://park.example/unsubscribe?c={{ campaign.id }}&e={{ email | urlencode }}&t={{ unsubscribe_token }}
//! ```
//!
//! Other parameters (`utm_source=email`, `s={{ segment }}`) are allowed and ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::campaign::{Campaign, CampaignId};

/// Why a campaign's `unsubscribe_url` cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The text is not `scheme://host/path?query`.
    #[error("it is not an absolute URL (`https://host/path?...`); the endpoint serves its path")]
    NotAbsolute,
    /// Template syntax before the query: the endpoint serves one fixed path.
    #[error(
        "it has a template expression before the `?`; the endpoint serves one fixed path, so put every variable in the query (`/unsubscribe?c={{{{ campaign.id }}}}&...`)"
    )]
    TemplateInPath,
    /// `{% %}` or `{# #}`: the value of each parameter must be readable without rendering.
    #[error(
        "it uses `{{% %}}` or `{{# #}}`; the endpoint reads the URL without rendering it, so write each variable as the whole value of one query parameter"
    )]
    Statement,
    /// A parameter's value mixes text and `{{ }}`, or holds more than one expression.
    #[error(
        "query parameter {name:?} mixes text and `{{{{ }}}}`; write its value as exactly one `{{{{ ... }}}}`, e.g. `{name}={{{{ email | urlencode }}}}`"
    )]
    Mixed {
        /// The parameter.
        name: String,
    },
    /// A parameter name holds template syntax.
    #[error("a query parameter's name {name:?} holds `{{{{ }}}}`; only values can be variables")]
    TemplatedName {
        /// The name as written.
        name: String,
    },
    /// One of the three variables is missing from the query.
    #[error(
        "its query has no parameter whose value is `{{{{ {var} }}}}`; the endpoint needs the campaign id, the address and the token in the query, e.g. `?c={{{{ campaign.id }}}}&e={{{{ email | urlencode }}}}&t={{{{ unsubscribe_token }}}}`"
    )]
    Missing {
        /// The variable, as a template names it.
        var: &'static str,
    },
    /// A variable is the value of two parameters, or two variables share a name.
    #[error(
        "query parameter {name:?} appears twice or `{{{{ {var} }}}}` is used twice; each of the three variables must be the value of exactly one parameter"
    )]
    Twice {
        /// The parameter.
        name: String,
        /// The variable.
        var: &'static str,
    },
}

/// A campaign's `[message] unsubscribe_url` that cannot be served, or two that clash.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// No `[message] unsubscribe_url` at all.
    #[error(
        "campaign file {}: [message] has no unsubscribe_url, so there is nothing to serve; add one like `unsubscribe_url = \"https://park.example/unsubscribe?c={{{{ campaign.id }}}}&e={{{{ email | urlencode }}}}&t={{{{ unsubscribe_token }}}}\"`",
        path.display()
    )]
    NoUrl {
        /// The campaign file.
        path: PathBuf,
    },
    /// The template cannot be served.
    #[error("campaign file {}: [message] unsubscribe_url cannot be served: {cause}", path.display())]
    Template {
        /// The campaign file.
        path: PathBuf,
        /// Why: in the message, not chained, so it is printed once.
        cause: RouteError,
    },
    /// Two campaign files with the same id at the same path.
    #[error(
        "campaign files {} and {} both have id {id:?} and unsubscribe path {url_path}; the endpoint could not tell their links apart, so give it one of them",
        first.display(), second.display()
    )]
    Duplicate {
        /// The campaign given first.
        first: PathBuf,
        /// The one given later.
        second: PathBuf,
        /// Their id.
        id: String,
        /// Their path.
        url_path: String,
    },
}

/// Which of the three values a query parameter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Campaign,
    Email,
    Token,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Campaign => "campaign.id",
            Var::Email => "email",
            Var::Token => "unsubscribe_token",
        }
    }
}

/// One campaign's link, read from its template: the path and the parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path as written in the URL, `/` when empty (compared with a request's raw path).
    pub path: String,
    /// The parameter whose value is `{{ campaign.id }}`.
    pub campaign_param: String,
    /// The parameter whose value is `{{ email ... }}`.
    pub email_param: String,
    /// The parameter whose value is `{{ unsubscribe_token }}`.
    pub token_param: String,
}

impl Route {
    /// Reads an `unsubscribe_url` template.
    ///
    /// # Errors
    /// When the path holds template syntax, or the query lacks one of the three variables as
    /// the whole value of one parameter (see the module docs).
    pub fn parse(template: &str) -> Result<Route, RouteError> {
        let t = template.trim();
        if t.contains("{%") || t.contains("{#") {
            return Err(RouteError::Statement);
        }
        let (_scheme, rest) = t.split_once("://").ok_or(RouteError::NotAbsolute)?;
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        let (before_query, after) = rest.split_at(end);
        if before_query.contains("{{") {
            return Err(RouteError::TemplateInPath);
        }
        let path = match before_query.find('/') {
            Some(i) => &before_query[i..],
            None => "/",
        };
        if before_query.is_empty() || before_query.starts_with('/') {
            // `https:///x`: no host.
            return Err(RouteError::NotAbsolute);
        }
        let query = after
            .strip_prefix('?')
            .map(|q| q.split('#').next().unwrap_or(""))
            .unwrap_or("");

        let mut found: [Option<String>; 3] = [None, None, None];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.contains("{{") {
                return Err(RouteError::TemplatedName { name: name.into() });
            }
            let name = percent_decode(name).unwrap_or_else(|| name.to_owned());
            let Some(var) = variable(&name, value)? else {
                continue;
            };
            if found[var as usize].is_some() || found_names(&found).any(|n| n == name) {
                return Err(RouteError::Twice {
                    name,
                    var: var.name(),
                });
            }
            found[var as usize] = Some(name);
        }
        let [campaign_param, email_param, token_param] = found;
        let missing = |v: Var| RouteError::Missing { var: v.name() };
        Ok(Route {
            path: path.to_owned(),
            campaign_param: campaign_param.ok_or_else(|| missing(Var::Campaign))?,
            email_param: email_param.ok_or_else(|| missing(Var::Email))?,
            token_param: token_param.ok_or_else(|| missing(Var::Token))?,
        })
    }
}

fn found_names(found: &[Option<String>; 3]) -> impl Iterator<Item = &str> {
    found.iter().flatten().map(String::as_str)
}

/// Which of the three variables a parameter's value is, if any.
fn variable(name: &str, value: &str) -> Result<Option<Var>, RouteError> {
    if !value.contains("{{") {
        return Ok(None);
    }
    let mixed = || RouteError::Mixed { name: name.into() };
    let inner = value
        .strip_prefix("{{")
        .and_then(|v| v.strip_suffix("}}"))
        .ok_or_else(mixed)?;
    if inner.contains("{{") || inner.contains("}}") {
        return Err(mixed());
    }
    // `{{- x -}}` and `{{+ x +}}` only control whitespace around the tag.
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let head: String = inner
        .split('|')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(match head.as_str() {
        "campaign.id" | "campaign['id']" | "campaign[\"id\"]" => Some(Var::Campaign),
        "email" => Some(Var::Email),
        "unsubscribe_token" => Some(Var::Token),
        _ => None,
    })
}

/// A campaign the endpoint serves.
#[derive(Debug, Clone)]
pub struct Served {
    /// The campaign's id, matched against the campaign parameter of a request.
    pub id: CampaignId,
    /// Its link's shape.
    pub route: Route,
}

/// Every served campaign, by path; several may share a path (told apart by their id).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    by_path: BTreeMap<String, Vec<Served>>,
}

impl Routes {
    /// The routes of these campaigns.
    ///
    /// # Errors
    /// The first campaign whose `unsubscribe_url` is missing or cannot be served, or two with
    /// the same id at the same path.
    pub fn new(campaigns: &[Campaign]) -> Result<Routes, RoutesError> {
        let mut by_path: BTreeMap<String, Vec<Served>> = BTreeMap::new();
        let mut files: BTreeMap<(String, CampaignId), PathBuf> = BTreeMap::new();
        for c in campaigns {
            let template = c
                .message
                .as_ref()
                .and_then(|m| m.unsubscribe_url.as_deref())
                .ok_or_else(|| RoutesError::NoUrl {
                    path: c.path.clone(),
                })?;
            let route = Route::parse(template).map_err(|cause| RoutesError::Template {
                path: c.path.clone(),
                cause,
            })?;
            let key = (route.path.clone(), c.id.clone());
            if let Some(first) = files.get(&key) {
                return Err(RoutesError::Duplicate {
                    first: first.clone(),
                    second: c.path.clone(),
                    id: c.id.to_string(),
                    url_path: route.path,
                });
            }
            files.insert(key, c.path.clone());
            by_path.entry(route.path.clone()).or_default().push(Served {
                id: c.id.clone(),
                route,
            });
        }
        Ok(Routes { by_path })
    }

    /// The campaigns served at this raw request path, or `None` for a path nobody serves.
    pub fn at(&self, path: &str) -> Option<&[Served]> {
        self.by_path.get(path).map(Vec::as_slice)
    }

    /// Every (path, campaign id) served, for the start-up message.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CampaignId)> {
        self.by_path
            .iter()
            .flat_map(|(p, v)| v.iter().map(move |s| (p.as_str(), &s.id)))
    }
}

/// Why a request's query cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8.
    #[error("query parameter {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// A parameter the endpoint reads is given more than once: a link the campaign wrote
    /// never repeats one, and either value could be the forged one.
    #[error("query parameter {0:?} is given more than once")]
    Repeated(String),
}

/// A request's query, decoded: name and value of each parameter, in order.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes `a=1&b=%40`: percent escapes only; `+` stays `+`, as in the URL the campaign
    /// wrote (an address may hold a `+`, and `urlencode` writes a space as `%20`).
    ///
    /// # Errors
    /// A name or value that is not percent-encoded UTF-8.
    pub fn parse(query: &str) -> Result<Query, QueryError> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || QueryError::Encoding(name.chars().take(40).collect());
            let name_d = percent_decode(name).ok_or_else(bad)?;
            let value_d = percent_decode(value).ok_or_else(bad)?;
            pairs.push((name_d, value_d));
        }
        Ok(Query(pairs))
    }

    /// The value of `name`, `None` when absent.
    ///
    /// # Errors
    /// [`QueryError::Repeated`] when it is given more than once.
    pub fn one<'a>(&'a self, name: &str) -> Result<Option<&'a str>, QueryError> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(QueryError::Repeated(name.chars().take(40).collect())),
            None => Ok(first),
        }
    }
}

/// `%xx` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "https://riverside-park.example/unsubscribe?c={{ campaign.id }}&e={{ email | urlencode }}&t={{ unsubscribe_token }}";

    fn route(path: &str, c: &str, e: &str, t: &str) -> Route {
        Route {
            path: path.into(),
            campaign_param: c.into(),
            email_param: e.into(),
            token_param: t.into(),
        }
    }

    #[test]
    fn reads_the_fixture_template() {
        assert_eq!(
            Route::parse(FIXTURE).unwrap(),
            route("/unsubscribe", "c", "e", "t")
        );
    }

    #[test]
    fn any_order_spacing_filters_and_extra_parameters() {
        let t = "https://x.example/a/b?utm=mail&tok={{unsubscribe_token}}&s={{ segment }}&addr={{- email|lower|urlencode -}}&id={{ campaign['id'] | urlencode }}#top";
        assert_eq!(Route::parse(t).unwrap(), route("/a/b", "id", "addr", "tok"));
        // No path at all is the root.
        let t = "https://x.example?c={{ campaign.id }}&e={{ email }}&t={{ unsubscribe_token }}";
        assert_eq!(Route::parse(t).unwrap().path, "/");
        // Percent-encoded names are compared decoded, as queries are.
        let t =
            "https://x.example/u?c%5F={{ campaign.id }}&e={{ email }}&t={{ unsubscribe_token }}";
        assert_eq!(Route::parse(t).unwrap().campaign_param, "c_");
    }

    #[test]
    fn refuses_what_cannot_be_served() {
        let e = |t: &str| Route::parse(t).unwrap_err();
        assert_eq!(
            e("https://x.example/u/{{ campaign.id }}?e={{ email }}&t={{ unsubscribe_token }}"),
            RouteError::TemplateInPath
        );
        assert_eq!(
            e(
                "https://{{ segment }}.x.example/u?c={{ campaign.id }}&e={{ email }}&t={{ unsubscribe_token }}"
            ),
            RouteError::TemplateInPath
        );
        assert_eq!(
            e("https://x.example/u?c={{ campaign.id }}&e={{ email }}"),
            RouteError::Missing {
                var: "unsubscribe_token"
            }
        );
        assert_eq!(
            e("https://x.example/u?e={{ email }}&t={{ unsubscribe_token }}"),
            RouteError::Missing { var: "campaign.id" }
        );
        assert_eq!(
            e("https://x.example/u?c=spring&e={{ email }}&t={{ unsubscribe_token }}"),
            RouteError::Missing { var: "campaign.id" }
        );
        assert_eq!(
            e(
                "https://x.example/u?c={{ campaign.id }}&t={{ unsubscribe_token }}&x={{ donor.email }}"
            ),
            RouteError::Missing { var: "email" }
        );
        assert_eq!(
            e("https://x.example/u?c={{ campaign.id }}&e=<{{ email }}>&t={{ unsubscribe_token }}"),
            RouteError::Mixed { name: "e".into() }
        );
        assert_eq!(
            e(
                "https://x.example/u?c={{ campaign.id }}&e={{ email }}{{ today }}&t={{ unsubscribe_token }}"
            ),
            RouteError::Mixed { name: "e".into() }
        );
        assert!(matches!(
            e(
                "https://x.example/u?c={{ campaign.id }}&e={{ email }}&t={{ unsubscribe_token }}&e2={{ email }}"
            ),
            RouteError::Twice { var: "email", .. }
        ));
        assert!(matches!(
            e("https://x.example/u?c={{ campaign.id }}&c={{ email }}&t={{ unsubscribe_token }}"),
            RouteError::Twice { var: "email", .. }
        ));
        assert_eq!(
            e("https://x.example/u?{{ x }}={{ campaign.id }}"),
            RouteError::TemplatedName {
                name: "{{ x }}".into()
            }
        );
        assert_eq!(
            e("https://x.example/u?{% if x %}c={{ campaign.id }}{% endif %}"),
            RouteError::Statement
        );
        assert_eq!(e("/u?c={{ campaign.id }}"), RouteError::NotAbsolute);
        assert_eq!(e("https:///u?c={{ campaign.id }}"), RouteError::NotAbsolute);
    }

    #[test]
    fn messages_show_the_fix() {
        let m = RouteError::Missing { var: "email" }.to_string();
        assert!(m.contains("`{{ email }}`"), "{m}");
        assert!(m.contains("e={{ email | urlencode }}"), "{m}");
        let m = RouteError::TemplateInPath.to_string();
        assert!(m.contains("c={{ campaign.id }}"), "{m}");
        let m = RouteError::Statement.to_string();
        assert!(m.contains("`{% %}`"), "{m}");
    }

    fn campaign(path: &str, id: &str, url: Option<&str>) -> Campaign {
        let message = url.map_or(String::new(), |u| {
            format!("[message]\nfrom = \"a@x.example\"\nunsubscribe_url = \"{u}\"\n")
        });
        let text = format!("[campaign]\nid = \"{id}\"\n[[segment]]\nname = \"all\"\n{message}");
        Campaign::parse(std::path::Path::new(path), &text).unwrap()
    }

    #[test]
    fn campaigns_share_a_path_by_id() {
        let other = "https://x.example/unsubscribe?id={{ campaign.id }}&a={{ email }}&k={{ unsubscribe_token }}";
        let routes = Routes::new(&[
            campaign("a.toml", "spring", Some(FIXTURE)),
            campaign("b.toml", "autumn", Some(other)),
            campaign("c.toml", "spring", Some("https://x.example/other?c={{ campaign.id }}&e={{ email }}&t={{ unsubscribe_token }}")),
        ])
        .unwrap();
        let at = routes.at("/unsubscribe").unwrap();
        assert_eq!(at.len(), 2);
        assert_eq!(at[1].route.campaign_param, "id");
        assert!(routes.at("/other").is_some());
        assert!(routes.at("/unsubscribe/").is_none());
        assert_eq!(routes.iter().count(), 3);
    }

    #[test]
    fn campaigns_that_cannot_be_served_name_their_file() {
        let e = Routes::new(&[campaign("a.toml", "spring", None)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.toml") && e.contains("no unsubscribe_url"),
            "{e}"
        );
        let e = Routes::new(&[campaign(
            "b.toml",
            "spring",
            Some("https://x.example/u?e={{ email }}"),
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.toml") && e.contains("campaign.id"), "{e}");
        let e = Routes::new(&[
            campaign("a.toml", "spring", Some(FIXTURE)),
            campaign("b.toml", "spring", Some(FIXTURE)),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("a.toml") && e.contains("b.toml") && e.contains("\"spring\""),
            "{e}"
        );
    }

    #[test]
    fn queries_decode_percent_escapes_but_not_plus() {
        let q = Query::parse("e=bob%2Btag%40example.org&x=a+b&t=&e2").unwrap();
        assert_eq!(q.one("e"), Ok(Some("bob+tag@example.org")));
        assert_eq!(q.one("x"), Ok(Some("a+b")));
        assert_eq!(q.one("t"), Ok(Some("")));
        assert_eq!(q.one("e2"), Ok(Some("")));
        assert_eq!(q.one("missing"), Ok(None));
        let q = Query::parse("e=a&e=b").unwrap();
        assert_eq!(q.one("e"), Err(QueryError::Repeated("e".into())));
        assert!(Query::parse("e=%zz").is_err());
        assert!(Query::parse("e=%ff").is_err());
        assert!(Query::parse("e=%4").is_err());
        assert_eq!(percent_decode("z%C3%B6e").as_deref(), Some("zöe"));
    }
}
