//! Who may connect and what they may do, as the config's files say: the
//! password file and the ACL file, read into the core's [`Auth`].

use crate::config::{Config, Profile};
use crate::core::auth::{AllowAll, Auth};

/// Builds the authenticator and authorizer from the files `config` names.
/// Every shard builds its own; the instance builds one first to check the
/// files before anything starts.
pub fn load(config: &Config) -> Result<Auth, String> {
    let mut auth = Auth::default();
    if let Some(path) = &config.auth.password_file {
        let file = crate::passwd::PasswordFile::load(path, config.auth.allow_anonymous)
            .map_err(|e| format!("auth.password_file: {}: {e}", path.display()))?;
        auth.authenticator = Box::new(file);
    } else if !config.auth.allow_anonymous && config.profile == Profile::Standard {
        return Err("auth.allow_anonymous = false needs auth.password_file".into());
    }
    if let Some(path) = &config.auth.acl_file {
        let acl = crate::acl::AclFile::load(path)
            .map_err(|e| format!("auth.acl_file: {}: {e}", path.display()))?;
        auth.authorizer = Box::new(acl);
    } else {
        auth.authorizer = Box::new(AllowAll);
    }
    Ok(auth)
}
