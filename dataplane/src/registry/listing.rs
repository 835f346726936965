//! Listings: tags, the catalog and referrers, keyset-paginated in byte order.

use aerugo_db::registry::{self, Referrer};
use aerugo_db::tenancy::{self, Viewer};
use aerugo_oci::{Digest, RepoName};

use super::Registry;
use crate::cache::codec::{Decoder, Encoder};
use crate::cache::{Kind, View};
use crate::error::Result;

/// Page size when the client gives no `n`, and the most one page may hold.
pub const MAX_PAGE: u32 = 10_000;

/// Referrers in one response (an index of descriptors, with annotations): past this, a `Link`
/// names the next page.
pub const MAX_REFERRERS_PAGE: u32 = 1_000;

/// A page request: `n` results after `last`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Results wanted (capped at [`MAX_PAGE`]).
    pub n: Option<u32>,
    /// Last result of the previous page.
    pub last: Option<String>,
}

/// One page of results and, if there are more, the `last` to ask the next page with.
#[derive(Debug, Clone)]
pub struct PageOf {
    /// The results, in byte order.
    pub items: Vec<String>,
    /// Set when more results follow.
    pub next: Option<String>,
}

/// Which repositories a catalog shows: those the SQL filter for `viewer` returns and `keep`
/// accepts (an API key's scopes).
pub struct CatalogFilter<'a> {
    /// Whose rights the SQL applies.
    pub viewer: Viewer,
    /// A further filter on names.
    pub keep: &'a (dyn Fn(&str) -> bool + Sync),
}

impl PageOf {
    fn encode(&self) -> bytes::Bytes {
        let size = self.items.iter().map(|t| t.len() + 4).sum::<usize>() + 64;
        let e = Encoder::with_capacity(size).opt_str(self.next.as_deref()).i64(self.items.len() as i64);
        self.items.iter().fold(e, |e, item| e.str(item)).finish()
    }

    fn decode(value: bytes::Bytes) -> Option<PageOf> {
        let mut d = Decoder::new(value);
        let next = d.opt_string()?;
        let count = usize::try_from(d.i64()?).ok()?;
        let items = (0..count).map(|_| d.string()).collect::<Option<Vec<_>>>()?;
        d.done().then_some(PageOf { items, next })
    }
}

impl Page {
    fn limit(&self) -> i64 {
        i64::from(self.n.unwrap_or(MAX_PAGE).min(MAX_PAGE))
    }

    /// Trims one-extra results fetched to learn whether another page follows.
    fn finish(&self, mut items: Vec<String>) -> PageOf {
        let limit = usize::try_from(self.limit()).unwrap_or(usize::MAX);
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().cloned()
        } else {
            None
        };
        PageOf { items, next }
    }
}

impl Registry {
    /// Tags of repository `name` (the repository `view` is of): the first page with the
    /// default size (what clients ask for) from the cache, else one read. Only that page is
    /// cached: keyed by any `n` and `last` a caller sends, anonymous callers could fill the cache
    /// with pages nobody else asks for; other pages are one indexed keyset read each.
    pub async fn tags(&self, view: &View<'_>, name: &RepoName, page: &Page) -> Result<PageOf> {
        const FIRST_PAGE: &str = "first";
        let cacheable = page.n.is_none() && page.last.is_none();
        if cacheable && let Some(cached) = view.get(Kind::Tags, FIRST_PAGE).await.and_then(PageOf::decode) {
            return Ok(cached);
        }
        let client = self.client().await?;
        let repo = self.repository(&client, name).await?;
        if page.limit() == 0 {
            return Ok(PageOf { items: Vec::new(), next: None });
        }
        let items = registry::list_tags(&client, repo.id, page.last.as_deref(), page.limit() + 1).await?;
        let found = page.finish(items);
        if cacheable {
            view.put(Kind::Tags, FIRST_PAGE, found.encode()).await;
        }
        Ok(found)
    }

    /// Repository names in the catalog that `filter` lets the caller see: those it may pull.
    /// Names an API key's scopes exclude are skipped page by page, so a page is full whenever
    /// enough names follow.
    pub async fn catalog(&self, page: &Page, filter: &CatalogFilter<'_>) -> Result<PageOf> {
        if page.limit() == 0 {
            return Ok(PageOf { items: Vec::new(), next: None });
        }
        let client = self.client().await?;
        let wanted = usize::try_from(page.limit()).unwrap_or(usize::MAX).saturating_add(1);
        let mut items = Vec::new();
        let mut last = page.last.clone();
        loop {
            let batch =
                tenancy::list_visible_repositories(&client, filter.viewer, last.as_deref(), page.limit() + 1).await?;
            let exhausted = batch.len() < usize::try_from(page.limit() + 1).unwrap_or(usize::MAX);
            last = batch.last().cloned();
            items.extend(batch.into_iter().filter(|name| (filter.keep)(name)));
            if exhausted || items.len() >= wanted {
                break;
            }
        }
        items.truncate(wanted);
        Ok(page.finish(items))
    }

    /// A page of the manifests of repository `name` whose subject is `subject` (in digest
    /// order; `page.last` is the last digest of the previous page), and the digest to continue
    /// after when more follow. A repository that does not exist has none.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<(Vec<Referrer>, Option<String>)> {
        let client = self.client().await?;
        let Some(repo) = registry::find_repository(&client, name.as_str()).await? else {
            return Ok((Vec::new(), None));
        };
        let limit = page.limit().min(i64::from(MAX_REFERRERS_PAGE));
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let mut found =
            registry::referrers(&client, repo.id, subject.as_str(), artifact_type, page.last.as_deref(), limit + 1)
                .await?;
        let next = if found.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            found.last().map(|r| r.digest.clone())
        } else {
            None
        };
        Ok((found, next))
    }
}
