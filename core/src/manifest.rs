//! `plugin.toml`, the manifest beside a plugin's component: read when the server loads the
//! plugins directory (`plugin::Registry`) and by `plugdesk plugin build | test`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// `plugin.toml`: the manifest of a plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin id.
    pub id: String,
    /// Plugin version.
    pub version: String,
    /// The contract version it is built against.
    pub wit_version: String,
    /// `channel` or `automation`.
    pub kind: String,
    /// What it does, for people.
    #[serde(default)]
    pub description: String,
    /// The capabilities it asks for.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Manifest {
    /// Reads a manifest file.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file and what is wrong in it.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("manifest", format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::invalid("manifest", format!("{}: {e}", path.display())))
    }

    /// Checks the manifest against what the component says of itself.
    ///
    /// # Errors
    /// A message naming every field that differs.
    pub fn check(&self, d: &plugdesk_host::Descriptor) -> std::result::Result<(), String> {
        let mut wrong = Vec::new();
        if self.id != d.id {
            wrong.push(format!("id is {:?} in plugin.toml but {:?} in the component", self.id, d.id));
        }
        if self.version != d.version {
            wrong.push(format!("version is {:?} in plugin.toml but {:?} in the component", self.version, d.version));
        }
        if self.wit_version != plugdesk_host::WIT_VERSION {
            wrong.push(format!(
                "wit_version is {:?}; this host supports {}",
                self.wit_version,
                plugdesk_host::WIT_VERSION
            ));
        }
        if self.kind != d.kind.as_str() {
            wrong.push(format!(
                "kind is {:?} in plugin.toml but the component is {} plugin",
                self.kind,
                d.kind.as_str()
            ));
        }
        let (mut a, mut b) = (self.capabilities.clone(), d.capabilities.clone());
        a.sort();
        b.sort();
        if a != b {
            wrong.push(format!("capabilities are {a:?} in plugin.toml but the component asks for {b:?}"));
        }
        if wrong.is_empty() { Ok(()) } else { Err(wrong.join("; ")) }
    }
}
