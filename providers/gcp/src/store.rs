//! [`GcsStore`]: the GCS [`ObjectStore`] of SPEC 5.2 on `StorageControl`. One GetBucket per
//! check, at most one UpdateBucket whose mask names only the drifted fields (guarded by the
//! bucket's metageneration), creation with every setting in the create call, the "ours or
//! theirs" decision when the name exists (FAILED_PRECONDITION over gRPC, 409 over HTTP), a
//! non-retryable refusal when a create fails so and the name does not exist (an organisation
//! policy), and recovery by owner labels.
//!
//! A compliant bucket costs one read and no write. Nothing is ever deleted: [`Control`] cannot
//! issue DeleteBucket or any object call.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_storage::model::Bucket;
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Encryption, Error, ObjectStore, Owner, Recovery, Result, Setting,
    owner::gcs_label,
};

use crate::{
    errors::{self, Call},
    iam,
    metering::Control,
    settings::{self, Observed},
};

/// What a CreateBucket came to.
enum Created {
    /// The bucket was created, as GCS returned it.
    Bucket(Box<Bucket>),
    /// The name may exist (FAILED_PRECONDITION over gRPC, 409); if it does not, this is the
    /// error to report.
    MaybeTaken(Error),
}

/// The default KMS key the spec asks for; empty for Google-managed encryption.
fn spec_key(spec: &BucketSpec) -> &str {
    match &spec.encryption {
        Encryption::Kms { key } => key,
        Encryption::ProviderManaged => "",
    }
}

/// The GCS bucket operations of one project in one region.
#[derive(Debug, Clone)]
pub(crate) struct GcsStore {
    control: Control,
    project: String,
    region: String,
    /// Our project as GCS reports it on buckets (`projects/<number>`), learned from a bucket we
    /// created or found listed in our project, so the steady-state check needs no listing.
    project_number: Arc<OnceLock<String>>,
}

impl GcsStore {
    pub(crate) fn new(control: Control, project: String, region: String) -> Self {
        GcsStore { control, project, region, project_number: Arc::default() }
    }

    /// Whether `bucket` belongs to our project. A bucket of another project that we may read
    /// (a cross-project grant) is not ours, whatever its labels say.
    async fn in_our_project(&self, name: &str, bucket: &Bucket) -> Result<bool> {
        if bucket.project == self.parent() || self.project_number.get() == Some(&bucket.project) {
            return Ok(true);
        }
        // GCS reports the owning project by number; our configuration has its ID. A listing of
        // our project settles it once, without knowing the number.
        let listed = self.listed_in_project(name).await?;
        if listed && !bucket.project.is_empty() {
            let _ = self.project_number.set(bucket.project.clone());
        }
        Ok(listed)
    }

    fn parent(&self) -> String {
        format!("projects/{}", self.project)
    }

    /// GetBucket, mapped; `Ok(None)` when the bucket does not exist.
    async fn get(&self, name: &str) -> Result<Option<Bucket>> {
        match self.control.get_bucket(settings::resource(name)).await {
            Ok(bucket) => Ok(Some(bucket)),
            Err(err) if errors::is_not_found(&err) => Ok(None),
            Err(err) => Err(errors::map(err, Call::on(iam::GET, name))),
        }
    }

    /// GetBucket for ensuring: a refused read is "someone else's bucket" unless the bucket is
    /// listed in our project (then we lack `storage.buckets.get` and say so).
    async fn get_for_ensure(&self, name: &str) -> Result<Option<Bucket>> {
        match self.control.get_bucket(settings::resource(name)).await {
            Ok(bucket) => Ok(Some(bucket)),
            Err(err) if errors::is_not_found(&err) => Ok(None),
            Err(err) if errors::is_denied(&err) => {
                let denied = errors::map(err, Call::on(iam::GET, name));
                match self.listed_in_project(name).await {
                    Ok(false) => Err(Error::AlreadyOwnedByOther { bucket: name.to_owned() }),
                    // Listed here, or listing refused too: report the refused read.
                    Ok(true) | Err(_) => Err(denied),
                }
            }
            Err(err) => Err(errors::map(err, Call::on(iam::GET, name))),
        }
    }

    /// Whether ListBuckets of our project shows `name` (reachable or not).
    async fn listed_in_project(&self, name: &str) -> Result<bool> {
        let unreachable = settings::resource(name);
        let mut token = String::new();
        loop {
            let page = self
                .control
                .list_buckets(self.parent(), name, token)
                .await
                .map_err(|e| errors::map(e, Call::global(iam::LIST)))?;
            if page.buckets.iter().any(|b| settings::short_name(b) == name)
                || page.unreachable.contains(&unreachable)
            {
                return Ok(true);
            }
            if page.next_page_token.is_empty() {
                return Ok(false);
            }
            token = page.next_page_token;
        }
    }

    /// Refuses a bucket that is not ours (SPEC 5.2: ours = our project AND our labels, or no
    /// owner labels yet): labelled for another cluster, or in another project whatever its labels
    /// say (our labels copied onto a bucket in a project we were granted access to do not make it
    /// ours). Once our project's number is known, the steady-state path makes no extra call.
    async fn check_ownership(&self, spec: &BucketSpec, bucket: &Bucket) -> Result<()> {
        let labels = settings::labels(bucket);
        if let Some(claimant) = settings::claimant(&labels)
            && claimant != gcs_label(&spec.owner.infrastructure_name)
        {
            return Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() });
        }
        if self.in_our_project(&spec.name, bucket).await? {
            Ok(())
        } else {
            Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() })
        }
    }

    /// Creates the bucket with every setting.
    async fn create(&self, spec: &BucketSpec) -> Result<Created> {
        let bucket = settings::new_bucket(spec, &self.project);
        let call = Call::on(iam::CREATE, &spec.name).setting_key(spec_key(spec));
        match self.control.create_bucket(&spec.name, bucket).await {
            Ok(created) => Ok(Created::Bucket(Box::new(created))),
            Err(err) if errors::is_create_conflict(&err) => {
                Ok(Created::MaybeTaken(errors::create_conflict_without_bucket(&err, call)))
            }
            Err(err) => Err(errors::map(err, call)),
        }
    }

    /// Corrects the drifted settings of an existing bucket with one UpdateBucket.
    async fn enforce(&self, spec: &BucketSpec, bucket: Bucket) -> Result<BucketReport> {
        let observed: Observed = settings::observe(&bucket, Some(spec));
        let corrected = observed.state.drift(spec, mvo_core::TagStyle::Labels);
        if corrected.is_empty() {
            return Ok(BucketReport { created: false, corrected, state: observed.state });
        }
        let (patch, paths) = settings::patch(spec, &bucket, &observed, &corrected);
        let key = if corrected.contains(&Setting::Encryption) { spec_key(spec) } else { "" };
        let call = Call::on(iam::UPDATE, &spec.name).setting_key(key).in_project(&bucket.project);
        let updated = self
            .control
            .update_bucket(patch, paths, bucket.metageneration)
            .await
            .map_err(|e: GaxError| errors::map(e, call))?;
        tracing::info!(bucket = %spec.name, ?corrected, "corrected bucket drift");
        Ok(BucketReport { created: false, corrected, state: settings::observe(&updated, Some(spec)).state })
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        let location = settings::location_of(&self.region);
        let (mut matches, mut skipped) = (Vec::new(), 0);
        let mut token = String::new();
        loop {
            let page = self
                .control
                .list_buckets(self.parent(), "", token)
                .await
                .map_err(|e| errors::map(e, Call::global(iam::LIST)))?;
            // The listing carries every bucket's metadata, so no per-bucket read is needed;
            // buckets GCS could not reach are reported by name and counted as skipped.
            skipped += page.unreachable.len();
            for bucket in &page.buckets {
                if bucket.location.eq_ignore_ascii_case(&location)
                    && owner.owns_labels(&settings::labels(bucket))
                {
                    matches.push(settings::short_name(bucket));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        if skipped > 0 {
            tracing::info!(skipped, "recovery skipped buckets GCS could not reach");
        }
        Ok(Recovery::from_matches(matches, skipped))
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        let existing = match self.get_for_ensure(&spec.name).await? {
            Some(bucket) => bucket,
            None => match self.create(spec).await? {
                Created::Bucket(created) => {
                    tracing::info!(bucket = %spec.name, location = %created.location, "created bucket");
                    if !created.project.is_empty() {
                        let _ = self.project_number.set(created.project.clone());
                    }
                    let state = settings::observe(&created, Some(spec)).state;
                    return Ok(BucketReport { created: true, corrected: Vec::new(), state });
                }
                // The name may exist: created meanwhile (a crashed or concurrent attempt of ours)
                // or taken by someone else. Read it again and decide by project and labels. If it
                // does not exist, the create was refused for another reason (an organisation
                // policy): report that, not a retry that can never succeed.
                Created::MaybeTaken(refusal) => match self.get_for_ensure(&spec.name).await? {
                    Some(existing) => existing,
                    None => return Err(refusal),
                },
            },
        };
        self.check_ownership(spec, &existing).await?;
        self.enforce(spec, existing).await
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        let bucket = self.get(name).await?.ok_or_else(|| Error::bucket_not_found(name))?;
        Ok(settings::observe(&bucket, None).state)
    }
}
