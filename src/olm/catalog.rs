//! The file-based catalog (FBC) of the package: one `olm.package`, the `stable`
//! `olm.channel` with the upgrade edge, and one `olm.bundle` per entry, as `opm render`
//! would write them for the two bundle images. `opm generate dockerfile <dir>` (or any
//! catalog image build) serves it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::csv::{self, ClusterServiceVersion, Icon};
use super::{CHANNEL, PACKAGE};

pub const SCHEMA_PACKAGE: &str = "olm.package";
pub const SCHEMA_CHANNEL: &str = "olm.channel";
pub const SCHEMA_BUNDLE: &str = "olm.bundle";

/// One blob of the catalog, by its `schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schema")]
pub enum Blob {
    #[serde(rename = "olm.package")]
    Package(Package),
    #[serde(rename = "olm.channel")]
    Channel(Channel),
    #[serde(rename = "olm.bundle")]
    Bundle(Bundle),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Package {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_channel: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<Icon>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub package: String,
    pub name: String,
    #[serde(default)]
    pub entries: Vec<ChannelEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replaces: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub skip_range: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    pub name: String,
    pub package: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub properties: Vec<Property>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_images: Vec<RelatedImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedImage {
    #[serde(default)]
    pub name: String,
    pub image: String,
}

pub const PROPERTY_PACKAGE: &str = "olm.package";
pub const PROPERTY_GVK: &str = "olm.gvk";

/// The `olm.package` property's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageProperty {
    pub package_name: String,
    pub version: String,
}

fn package_property(version: &semver::Version) -> Property {
    Property {
        type_: PROPERTY_PACKAGE.into(),
        value: serde_json::json!({"packageName": PACKAGE, "version": version.to_string()}),
    }
}

/// The bundle image of a version: `<repo>:v<version>`.
pub fn bundle_image(repo: &str, version: &semver::Version) -> String {
    format!("{repo}:v{version}")
}

/// The catalog for `csv` (this build's bundle) and its predecessor: the channel's head is
/// this version, replacing the previous one and skipping everything in `olm.skipRange`.
pub fn generate(
    csv: &ClusterServiceVersion,
    bundle_repo: &str,
    version: &semver::Version,
    previous: &semver::Version,
) -> Vec<Blob> {
    let current = csv::csv_name(version);
    let before = csv::csv_name(previous);
    let skip_range = csv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(csv::SKIP_RANGE))
        .cloned()
        .unwrap_or_default();
    let mut properties = vec![package_property(version)];
    for owned in csv
        .spec
        .customresourcedefinitions
        .iter()
        .flat_map(|c| &c.owned)
    {
        let group = owned.name.split_once('.').map_or("", |(_, g)| g);
        properties.push(Property {
            type_: PROPERTY_GVK.into(),
            value: serde_json::json!({"group": group, "kind": owned.kind, "version": owned.version}),
        });
    }
    let image = bundle_image(bundle_repo, version);
    let mut related_images = vec![RelatedImage {
        name: String::new(),
        image: image.clone(),
    }];
    related_images.extend(csv.spec.related_images.iter().map(|r| RelatedImage {
        name: r.name.clone(),
        image: r.image.clone(),
    }));
    vec![
        Blob::Package(Package {
            name: PACKAGE.into(),
            default_channel: CHANNEL.into(),
            description: csv.spec.description.clone(),
            icon: csv.spec.icon.first().cloned(),
        }),
        Blob::Channel(Channel {
            package: PACKAGE.into(),
            name: CHANNEL.into(),
            entries: vec![
                ChannelEntry {
                    name: before.clone(),
                    replaces: String::new(),
                    skips: Vec::new(),
                    skip_range: String::new(),
                },
                ChannelEntry {
                    name: current.clone(),
                    replaces: before.clone(),
                    skips: Vec::new(),
                    skip_range,
                },
            ],
            properties: Vec::new(),
        }),
        Blob::Bundle(Bundle {
            name: before,
            package: PACKAGE.into(),
            image: bundle_image(bundle_repo, previous),
            properties: vec![package_property(previous)],
            related_images: Vec::new(),
        }),
        Blob::Bundle(Bundle {
            name: current,
            package: PACKAGE.into(),
            image,
            properties,
            related_images,
        }),
    ]
}

/// The catalog as one YAML stream.
pub fn to_yaml(blobs: &[Blob]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for blob in blobs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(blob)?);
    }
    Ok(out)
}
