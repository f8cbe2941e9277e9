//! Searching the hub's model list.

use super::{scrub, HubSettings, USER_AGENT};
use crate::engine::{Error, Result};
use serde::Deserialize;
use std::time::Duration;

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelSummary {
    pub id: String,
    pub downloads: u64,
    pub likes: u64,
    /// The task, e.g. `text-generation`.
    pub pipeline_tag: Option<String>,
    /// The library the hub attributes the model to, e.g. `transformers` or `gguf`.
    pub library: Option<String>,
    pub tags: Vec<String>,
}

/// The hub's JSON for a model; every field optional, as the API varies between hubs and mirrors.
#[derive(Deserialize)]
struct RawModel {
    id: Option<String>,
    #[serde(rename = "modelId")]
    model_id: Option<String>,
    downloads: Option<u64>,
    likes: Option<u64>,
    pipeline_tag: Option<String>,
    library_name: Option<String>,
    tags: Option<Vec<String>>,
}

/// The models whose id matches `query`, most downloaded first, at most `limit` of them:
/// `GET {endpoint}/api/models?search=QUERY&limit=N&sort=downloads&direction=-1`.
pub fn search(settings: &HubSettings, query: &str, limit: usize) -> Result<Vec<ModelSummary>> {
    let endpoint = settings.endpoint.as_str();
    if settings.offline {
        return Err(Error::Invalid(
            "searching the hub needs the network, but HF_HUB_OFFLINE is set; unset it to search, \
             or use `distill-tui cache` to list the models already downloaded"
                .into(),
        ));
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let agent = ureq::AgentBuilder::new()
        .try_proxy_from_env(true)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .user_agent(USER_AGENT)
        .build();
    let mut request = agent
        .get(&format!("{endpoint}/api/models"))
        .query("search", query)
        .query("limit", &limit.to_string())
        .query("sort", "downloads")
        .query("direction", "-1");
    if let Some(token) = settings.token() {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let what = format!("search {query:?}");
    let response = request.call().map_err(|e| match e {
        ureq::Error::Transport(t) => Error::Network {
            id: what.clone(),
            endpoint: endpoint.to_string(),
            detail: scrub(t.to_string(), settings.token()),
        },
        ureq::Error::Status(status @ (401 | 403), _) => Error::Invalid(format!(
            "the hub at {endpoint} refused the {what} (HTTP {status}); the token in HF_TOKEN \
             (or the token file) may be invalid or expired"
        )),
        ureq::Error::Status(404, _) => Error::Invalid(format!(
            "the hub at {endpoint} has no model search (HTTP 404 for /api/models); \
             check HF_ENDPOINT"
        )),
        ureq::Error::Status(status, _) => {
            Error::Network { id: what.clone(), endpoint: endpoint.to_string(), detail: format!("HTTP {status}") }
        }
    })?;
    let raw: Vec<RawModel> = response.into_json().map_err(|e| {
        let detail = scrub(e.to_string(), settings.token());
        Error::Invalid(format!(
            "the hub at {endpoint} answered the {what} with something other than \
             a model list ({detail})"
        ))
    })?;
    let models = raw.into_iter().filter_map(|m| {
        Some(ModelSummary {
            id: m.id.or(m.model_id)?,
            downloads: m.downloads.unwrap_or(0),
            likes: m.likes.unwrap_or(0),
            pipeline_tag: m.pipeline_tag,
            library: m.library_name,
            tags: m.tags.unwrap_or_default(),
        })
    });
    Ok(models.take(limit).collect())
}
