//! [`S3Store`]: the S3 [`ObjectStore`]. Read-compare-write for every setting of SPEC 5.1, creation
//! with the hardened settings, and recovery by owner tags.
//!
//! A compliant bucket costs HeadBucket plus four Gets and no write. Only drifted settings are
//! written, foreign tags and lifecycle rules are carried over, and nothing is ever deleted: the
//! client here is never asked for DeleteBucket, DeleteObject or Object Lock.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::{
    operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationOutput,
    types::{BucketCannedAcl, BucketLocationConstraint, CreateBucketConfiguration, LifecycleRule as S3Rule},
};
use futures_util::{StreamExt, stream};
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Error, ObjectStore, Owner, PublicAccessBlock, Recovery, Result,
    Setting,
    bucket::{ABORT_UPLOADS_RULE_ID, BACKUP_EXPIRY_RULE_ID},
};
use tokio::sync::OnceCell;

use crate::{
    errors::{self, Call},
    iam::action,
    settings,
};

/// Buckets inspected at once during recovery.
const RECOVERY_CONCURRENCY: usize = 8;
/// The region whose buckets are created without a LocationConstraint.
const US_EAST_1: &str = "us-east-1";

/// The S3 bucket operations of one account in one region.
///
/// Every call about a bucket carries `ExpectedBucketOwner` = the operator's account, learned once
/// with STS GetCallerIdentity on the first bucket call (not at startup: the credentials secret may
/// not exist yet then). S3 answers a call on a bucket of another account with 403, so a name that
/// another account re-registered after an out-of-band delete is never read as ours or written.
#[derive(Debug, Clone)]
pub(crate) struct S3Store {
    client: aws_sdk_s3::Client,
    sts: aws_sdk_sts::Client,
    account: Arc<OnceCell<String>>,
    region: String,
}

/// A bucket as read, plus what the neutral [`BucketState`] cannot carry.
struct Observed {
    state: BucketState,
    /// False when the encryption reads like a neutral value but is not written the way the
    /// operator writes it (SSE-KMS without bucket key, DSSE): still drift.
    encryption_exact: bool,
    /// The lifecycle rules exactly as S3 returned them, so foreign rules are written back
    /// verbatim (transitions, tag filters and all), not through the neutral shape.
    raw_rules: Vec<S3Rule>,
}

/// What one bucket turned out to be during recovery.
enum Inspection {
    Ours(String),
    NotOurs,
    Skipped,
}

/// Whether an error means "this bucket cannot be inspected" (denied, or gone meanwhile).
fn uninspectable(err: &Error) -> bool {
    matches!(err, Error::PermissionDenied { .. } | Error::NotFound { .. })
}

impl S3Store {
    pub(crate) fn new(client: aws_sdk_s3::Client, sts: aws_sdk_sts::Client, region: String) -> Self {
        S3Store { client, sts, account: Arc::default(), region }
    }

    /// The operator's AWS account ID, asked from STS once.
    async fn account(&self) -> Result<&str> {
        let account = self
            .account
            .get_or_try_init(|| async {
                let identity = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| errors::map(e, Call::global("sts:GetCallerIdentity")))?;
                identity.account().filter(|a| !a.is_empty()).map(str::to_owned).ok_or_else(|| {
                    Error::Unauthenticated { message: "sts:GetCallerIdentity named no account".into() }
                })
            })
            .await?;
        Ok(account.as_str())
    }

    /// The bucket's region when it exists, `None` when it does not.
    async fn head(&self, name: &str) -> Result<Option<String>> {
        let account = self.account().await?;
        match self.client.head_bucket().bucket(name).expected_bucket_owner(account).send().await {
            // S3 always sends x-amz-bucket-region; fall back to ours rather than spend a read.
            Ok(out) => Ok(Some(out.bucket_region().unwrap_or(&self.region).to_owned())),
            Err(err) => match errors::map(err, Call::on(action("HeadBucket"), name)) {
                Error::NotFound { .. } => Ok(None),
                Error::PermissionDenied { operation, message } => {
                    Err(self.explain_denied_head(name, operation, message).await)
                }
                other => Err(other),
            },
        }
    }

    /// S3 answers HeadBucket with 404 for a name nobody owns and 403 for a bucket that exists but
    /// is not readable by us: either another account's bucket, or ours and we lack s3:ListBucket.
    /// Our own bucket list tells the two apart without a write.
    async fn explain_denied_head(&self, name: &str, operation: String, message: String) -> Error {
        match self.list_bucket_names().await {
            Ok(names) if !names.iter().any(|n| n == name) => {
                Error::AlreadyOwnedByOther { bucket: name.to_owned() }
            }
            Ok(_) => Error::PermissionDenied { operation, message },
            Err(err) => err,
        }
    }

    /// Creates the bucket; `Ok(false)` when it already exists in our account.
    async fn create(&self, spec: &BucketSpec) -> Result<bool> {
        let mut request = self.client.create_bucket().bucket(&spec.name).acl(BucketCannedAcl::Private);
        // us-east-1 rejects an explicit LocationConstraint naming itself.
        if spec.region != US_EAST_1 {
            let location = BucketLocationConstraint::from(spec.region.as_str());
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(location).build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if errors::code(&err) == Some("BucketAlreadyOwnedByYou") => Ok(false),
            Err(err) => Err(errors::map(err, Call::on(action("CreateBucket"), &spec.name))),
        }
    }

    /// The four setting reads, concurrently.
    async fn read_settings(&self, name: &str, region: String) -> Result<Observed> {
        let account = self.account().await?;
        let encryption = async {
            let out =
                self.client.get_bucket_encryption().bucket(name).expected_bucket_owner(account).send().await;
            let call = Call::on(action("GetBucketEncryption"), name);
            let out = errors::map_with(out, "ServerSideEncryptionConfigurationNotFoundError", call)?;
            Ok::<_, Error>(settings::encryption_from(
                out.as_ref().and_then(|o| o.server_side_encryption_configuration()),
            ))
        };
        let public_access = async {
            let out = self
                .client
                .get_public_access_block()
                .bucket(name)
                .expected_bucket_owner(account)
                .send()
                .await;
            let call = Call::on(action("GetPublicAccessBlock"), name);
            let out = errors::map_with(out, "NoSuchPublicAccessBlockConfiguration", call)?;
            Ok::<_, Error>(settings::public_access_from(
                out.as_ref().and_then(|o| o.public_access_block_configuration()),
            ))
        };
        let lifecycle = async {
            let out = self
                .client
                .get_bucket_lifecycle_configuration()
                .bucket(name)
                .expected_bucket_owner(account)
                .send()
                .await;
            let call = Call::on(action("GetBucketLifecycleConfiguration"), name);
            let out = errors::map_with(out, "NoSuchLifecycleConfiguration", call)?;
            Ok::<_, Error>(
                out.as_ref().map(GetBucketLifecycleConfigurationOutput::rules).unwrap_or_default().to_vec(),
            )
        };
        let tags = async {
            let out =
                self.client.get_bucket_tagging().bucket(name).expected_bucket_owner(account).send().await;
            let call = Call::on(action("GetBucketTagging"), name);
            let out = errors::map_with(out, "NoSuchTagSet", call)?;
            Ok::<_, Error>(out.map(|o| settings::tags_from(o.tag_set())).unwrap_or_default())
        };
        let ((encryption, encryption_exact), public_access, raw_rules, tags) =
            tokio::try_join!(encryption, public_access, lifecycle, tags)?;
        let state = BucketState {
            name: name.to_owned(),
            region,
            encryption,
            public_access,
            lifecycle: raw_rules.iter().filter_map(settings::rule_from).collect(),
            tags,
        };
        Ok(Observed { state, encryption_exact, raw_rules })
    }

    async fn observe(&self, name: &str) -> Result<Observed> {
        let region = self.head(name).await?.ok_or_else(|| Error::bucket_not_found(name))?;
        self.read_settings(name, region).await
    }

    /// Writes one setting to its desired value and updates `observed` to match.
    async fn write(&self, spec: &BucketSpec, setting: Setting, observed: &mut Observed) -> Result<()> {
        let name = spec.name.as_str();
        let account = self.account().await?;
        let state = &mut observed.state;
        match setting {
            Setting::Encryption => {
                let config = settings::encryption_to(&spec.encryption)?;
                let sent = self
                    .client
                    .put_bucket_encryption()
                    .bucket(name)
                    .expected_bucket_owner(account)
                    .server_side_encryption_configuration(config)
                    .send()
                    .await;
                sent.map_err(|e| errors::map(e, Call::on(action("PutBucketEncryption"), name)))?;
                state.encryption = Some(spec.encryption.clone());
                observed.encryption_exact = true;
            }
            Setting::PublicAccess => {
                let sent = self
                    .client
                    .put_public_access_block()
                    .bucket(name)
                    .expected_bucket_owner(account)
                    .public_access_block_configuration(settings::public_access_all_blocked())
                    .send()
                    .await;
                sent.map_err(|e| errors::map(e, Call::on(action("PutPublicAccessBlock"), name)))?;
                state.public_access = PublicAccessBlock::ALL_BLOCKED;
            }
            Setting::Lifecycle => {
                let Some(merged) = spec.merge_lifecycle(&state.lifecycle) else { return Ok(()) };
                // merge_lifecycle decides and fixes the order (foreign first, then managed); the
                // body keeps foreign rules in their raw S3 form so nothing of them is lost.
                let mut rules: Vec<S3Rule> =
                    observed.raw_rules.iter().filter(|r| !is_managed_id(r.id())).cloned().collect();
                for rule in spec.managed_lifecycle() {
                    rules.push(settings::rule_to(&rule)?);
                }
                let sent = self
                    .client
                    .put_bucket_lifecycle_configuration()
                    .bucket(name)
                    .expected_bucket_owner(account)
                    .lifecycle_configuration(settings::lifecycle_to(rules.clone())?)
                    .send()
                    .await;
                sent.map_err(|e| errors::map(e, Call::on(action("PutBucketLifecycleConfiguration"), name)))?;
                state.lifecycle = merged;
                observed.raw_rules = rules;
            }
            Setting::Tags => {
                let Some(merged) = spec.merge_tags(&state.tags) else { return Ok(()) };
                let sent = self
                    .client
                    .put_bucket_tagging()
                    .bucket(name)
                    .expected_bucket_owner(account)
                    .tagging(settings::tags_to(&merged)?)
                    .send()
                    .await;
                sent.map_err(|e| errors::map(e, Call::on(action("PutBucketTagging"), name)))?;
                state.tags = merged;
            }
        }
        Ok(())
    }

    /// Recovery verdict for one listed bucket.
    async fn inspect(&self, name: String, owner: &Owner) -> Result<Inspection> {
        let account = self.account().await?;
        let located =
            self.client.get_bucket_location().bucket(&name).expected_bucket_owner(account).send().await;
        let region = match located {
            Ok(out) => settings::region_of_location(out.location_constraint().map(|c| c.as_str())),
            Err(err) => {
                let err = errors::map(err, Call::on(action("GetBucketLocation"), &name));
                return if uninspectable(&err) { Ok(Inspection::Skipped) } else { Err(err) };
            }
        };
        if region != self.region {
            return Ok(Inspection::NotOurs);
        }
        let tagged =
            self.client.get_bucket_tagging().bucket(&name).expected_bucket_owner(account).send().await;
        let tags = match errors::map_with(tagged, "NoSuchTagSet", Call::on(action("GetBucketTagging"), &name))
        {
            Ok(out) => out.map(|o| settings::tags_from(o.tag_set())).unwrap_or_default(),
            Err(err) if uninspectable(&err) => return Ok(Inspection::Skipped),
            Err(err) => return Err(err),
        };
        Ok(if owner.owns_tags(&tags) { Inspection::Ours(name) } else { Inspection::NotOurs })
    }

    async fn list_bucket_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_buckets()
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| errors::map(e, Call::global(action("ListBuckets"))))?;
            names.extend(out.buckets().iter().filter_map(|b| b.name().map(str::to_owned)));
            token = out.continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }
}

/// Managed rules are recognised by ID, like [`mvo_core::LifecycleRule::is_managed`].
fn is_managed_id(id: Option<&str>) -> bool {
    id.is_some_and(|id| [BACKUP_EXPIRY_RULE_ID, ABORT_UPLOADS_RULE_ID].contains(&id))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        let names = self.list_bucket_names().await?;
        let inspections: Vec<Result<Inspection>> = stream::iter(names)
            .map(|name| self.inspect(name, owner))
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        let (mut matches, mut skipped) = (Vec::new(), 0);
        for inspection in inspections {
            match inspection? {
                Inspection::Ours(name) => matches.push(name),
                Inspection::Skipped => skipped += 1,
                Inspection::NotOurs => {}
            }
        }
        if skipped > 0 {
            tracing::info!(skipped, "recovery skipped buckets that refused inspection");
        }
        Ok(Recovery::from_matches(matches, skipped))
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        let region = match self.head(&spec.name).await? {
            Some(region) => region,
            None if self.create(spec).await? => return self.harden_new(spec).await,
            // BucketAlreadyOwnedByYou: created meanwhile by us (a crashed earlier attempt, or a
            // concurrent one): ours, so enforce like any existing bucket.
            None => spec.region.clone(),
        };
        let mut observed = self.read_settings(&spec.name, region).await?;
        if let Some(claimant) = Owner::claimed_by(&observed.state.tags)
            && claimant != spec.owner.infrastructure_name
        {
            return Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() });
        }
        let mut corrected = observed.state.drift(spec, mvo_core::TagStyle::Tags);
        // An inexact form only matters when a key is asked for: any KMS form is stronger than the
        // AES256 default and is never weakened.
        let kms_wanted = matches!(spec.encryption, mvo_core::Encryption::Kms { .. });
        if kms_wanted && !observed.encryption_exact && !corrected.contains(&Setting::Encryption) {
            corrected.insert(0, Setting::Encryption);
        }
        for setting in &corrected {
            self.write(spec, *setting, &mut observed).await?;
        }
        if !corrected.is_empty() {
            tracing::info!(bucket = %spec.name, ?corrected, "corrected bucket drift");
        }
        Ok(BucketReport { created: false, corrected, state: observed.state })
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        Ok(self.observe(name).await?.state)
    }
}

impl S3Store {
    /// Writes every setting on a bucket this call created. Tags go first, so that a crash right
    /// after creation still leaves a bucket recovery can find.
    async fn harden_new(&self, spec: &BucketSpec) -> Result<BucketReport> {
        let mut observed = Observed {
            state: BucketState {
                name: spec.name.clone(),
                region: spec.region.clone(),
                encryption: None,
                public_access: PublicAccessBlock::default(),
                lifecycle: Vec::new(),
                tags: Default::default(),
            },
            encryption_exact: true,
            raw_rules: Vec::new(),
        };
        for setting in [Setting::Tags, Setting::PublicAccess, Setting::Encryption, Setting::Lifecycle] {
            self.write(spec, setting, &mut observed).await?;
        }
        tracing::info!(bucket = %spec.name, region = %spec.region, "created bucket");
        Ok(BucketReport { created: true, corrected: Vec::new(), state: observed.state })
    }
}
