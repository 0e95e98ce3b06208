//! Where an instance type's capacity comes from: the `overrides` setting, else the ConfigMap
//! (one family key, fetched through the host), else the built-in table (`fallback: embedded`).

use crate::builtin;
use crate::settings::{Fallback, Settings};
use crate::source::{Resource, ResourceSource};
use capa_core::Capacity;
use capa_core::table::{self, TypeName};

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Override,
    ConfigMap,
    Builtin,
}

/// What the ConfigMap said, when it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigMapState {
    /// It has the type.
    Found,
    /// It was read and does not have the type.
    Lacks,
    /// The host could not give it (missing, forbidden, no cluster).
    Unreadable(String),
    /// It was read and its content is not in our format.
    Malformed(String),
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub capacity: Option<(Capacity, Source)>,
    /// `None` when the ConfigMap was not asked (an override answered).
    pub configmap: Option<ConfigMapState>,
}

/// Looks `name` up: overrides, then the ConfigMap (one family, through the host), then (if enabled)
/// the built-in table.
pub fn resolve(
    name: TypeName<'_>,
    instance_type: &str,
    settings: &Settings,
    src: &impl ResourceSource,
) -> Resolution {
    resolve_with(name, instance_type, settings, |name| {
        match src.get(&Resource {
            api_version: "v1",
            kind: "ConfigMap",
            namespace: &settings.config_map_namespace,
            name: &settings.config_map_name,
            field_mask: &name.field_mask(),
        }) {
            Err(e) => (ConfigMapState::Unreadable(e), None),
            Ok(bytes) => match table::lookup_in_configmap(&bytes, name) {
                Ok(Some(c)) => (ConfigMapState::Found, Some(c)),
                Ok(None) => (ConfigMapState::Lacks, None),
                Err(e) => (ConfigMapState::Malformed(e.to_string()), None),
            },
        }
    })
}

/// The lookup order of [`resolve`] with the ConfigMap's answer given by `configmap` (asked only
/// when no override answers): the policy asks the host, the refresher its own copy of the table.
pub fn resolve_with(
    name: TypeName<'_>,
    instance_type: &str,
    settings: &Settings,
    configmap: impl FnOnce(TypeName<'_>) -> (ConfigMapState, Option<Capacity>),
) -> Resolution {
    if let Some(c) = settings.overrides.get(instance_type) {
        return Resolution {
            capacity: Some((*c, Source::Override)),
            configmap: None,
        };
    }
    let (state, found) = configmap(name);
    if let Some(c) = found {
        return Resolution {
            capacity: Some((c, Source::ConfigMap)),
            configmap: Some(state),
        };
    }
    let builtin = match settings.fallback {
        Fallback::Embedded => builtin::lookup(instance_type).map(|c| (c, Source::Builtin)),
        Fallback::None => None,
    };
    Resolution {
        capacity: builtin,
        configmap: Some(state),
    }
}
