//! Velero's credentials file rendered by the operator ([`mvo_core::DerivedCredentials`]): for a
//! provider whose plugin reads a layout the credential operator does not write, the file is
//! rendered from the credential operator's secret on every pass and applied (through the pass's
//! [`super::writer::Writer`], so plan mode writes nothing) into the operator-owned secret
//! [`VELERO_DERIVED_CREDENTIALS_SECRET`], which Velero's Deployment mounts instead. A rotation of
//! the source secret starts a pass (the controller watches it by name), so the rendered file
//! follows it within seconds.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, core::ApiResource};

use super::{
    Error, apply,
    build::{self, DesiredObject},
    conditions::{CREDENTIALS_READY, Report},
    context::Context,
    validate::InstallIdentity,
};
use mvo_core::{
    CredentialsWiring, DerivedCredentials,
    velero::{VELERO_CREDENTIALS_SECRET, VELERO_DERIVED_CREDENTIALS_SECRET},
};

/// Renders Velero's credentials file from the credential operator's secret and applies it into
/// the operator's own secret; CredentialsReady says which source keys are missing.
pub async fn velero_credentials(
    ctx: &Context,
    install: &InstallIdentity,
    wiring: &CredentialsWiring,
    derived: &DerivedCredentials,
) -> Result<Report, Error> {
    let namespace = &install.namespace;
    let source = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(VELERO_CREDENTIALS_SECRET)
        .await
        .map_err(|source| Error::Read { what: format!("Secret/{VELERO_CREDENTIALS_SECRET}"), source })?;
    let Some(source) = source else {
        return Ok(Report::fail(
            CREDENTIALS_READY,
            "WaitingForCredentials",
            format!("waiting for the cloud credential operator to create Secret {VELERO_CREDENTIALS_SECRET}"),
        ));
    };
    let file = match derived.render(&decoded(&source)) {
        Ok(file) => file,
        Err(missing) => {
            return Ok(Report::fail(
                CREDENTIALS_READY,
                "WaitingForCredentials",
                format!(
                    "Secret {VELERO_CREDENTIALS_SECRET} lacks {} (missing, empty or spanning lines), needed to \
                     render Velero's credentials file into Secret {VELERO_DERIVED_CREDENTIALS_SECRET}",
                    missing.join(", ")
                ),
            ));
        }
    };
    let object = derived_secret(install, &wiring.secret_key, file);
    apply::apply(&ctx.client, namespace, &object, &ctx.writer).await?;
    Ok(Report::ok(
        CREDENTIALS_READY,
        "CredentialsAvailable",
        format!(
            "Velero's cloud credentials are present (rendered from Secret {VELERO_CREDENTIALS_SECRET} into \
             Secret {VELERO_DERIVED_CREDENTIALS_SECRET})"
        ),
    ))
}

/// The secret's values as text; values that are not UTF-8 count as absent.
fn decoded(secret: &Secret) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect();
    // `stringData` is write-only on a real API server; kept for servers that echo it.
    for (k, v) in secret.string_data.iter().flatten() {
        values.entry(k.clone()).or_insert_with(|| v.clone());
    }
    values
}

/// The operator-owned secret holding `file` under `key`.
pub fn derived_secret(install: &InstallIdentity, key: &str, file: String) -> DesiredObject {
    let secret = Secret {
        metadata: build::object_meta(VELERO_DERIVED_CREDENTIALS_SECRET, install),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(key.to_owned(), ByteString(file.into_bytes()))])),
        ..Default::default()
    };
    let mut object = serde_json::to_value(&secret).unwrap_or_default();
    object["apiVersion"] = "v1".into();
    object["kind"] = "Secret".into();
    DesiredObject {
        resource: ApiResource::erase::<Secret>(&()),
        name: VELERO_DERIVED_CREDENTIALS_SECRET.to_owned(),
        object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_secret_is_owned_and_holds_only_the_file() {
        let install = InstallIdentity {
            name: "cluster".into(),
            namespace: "openshift-velero".into(),
            uid: "u".into(),
            owner: Default::default(),
        };
        let object = derived_secret(&install, "cloud", "A=b\n".into());
        assert_eq!(object.describe(), "Secret/velero-cloud-credentials");
        assert_eq!(object.object["data"], serde_json::json!({"cloud": "QT1iCg=="}));
        assert_eq!(object.object["metadata"]["namespace"], "openshift-velero");
        assert!(object.object["metadata"]["ownerReferences"].is_array());
        let source = Secret {
            data: Some(BTreeMap::from([
                ("a".to_owned(), ByteString(b"x".to_vec())),
                ("bad".to_owned(), ByteString(vec![0xff])),
            ])),
            ..Default::default()
        };
        assert_eq!(decoded(&source), BTreeMap::from([("a".to_owned(), "x".to_owned())]));
    }
}
