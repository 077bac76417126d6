//! PLACEHOLDER until the real single-flight cache lands: calls the upstream every time.
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

pub trait Refreshed: Clone + Send + Sync + 'static {
    fn lifetime(&self) -> Option<Duration>;
}
pub trait RefreshFailure: Clone + Send + Sync + 'static {
    fn evicts(&self) -> bool;
    fn internal() -> Self;
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Upstream,
    Coalesced,
}
impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Upstream => "upstream",
            Self::Coalesced => "coalesced",
        }
    }
}
pub struct Served<V> {
    pub value: V,
    pub age: Duration,
    pub source: Source,
}
pub struct RefreshCache<V, E>(PhantomData<(V, E)>);
impl<V: Refreshed, E: RefreshFailure> RefreshCache<V, E> {
    pub fn new(_ttl: Duration, _max: u64) -> Self {
        Self(PhantomData)
    }
    pub async fn get_or_refresh<F, Fut>(&self, _c: &str, _t: &str, fetch: F) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let value = fetch().await?;
        Ok(Served { value, age: Duration::ZERO, source: Source::Upstream })
    }
}
