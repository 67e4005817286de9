//! A private PAM configuration for tests, through Debian's `libpam-wrapper`: the real
//! libpam runs, but reads service files from a temporary directory instead of
//! `/etc/pam.d`, and `pam_matrix.so` checks passwords against a plain file.
//!
//! It only affects a process started with [`PamWrapper::env`] (the wrapper is
//! `LD_PRELOAD`ed), so give that environment to the child that calls PAM (the daemon, or a
//! re-executed test). Nothing on the host changes.
//!
//! Trap: `pam_matrix verbose` sends text messages with a NULL reply pointer, which crashes
//! `pamtester` (misc_conv); our conversation handles it, see `pam_auth.rs`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The PAM service the daemon uses.
pub const SERVICE: &str = "agentkeys";

/// A service directory with `agentkeys` (pam_matrix for auth and account) and `other`
/// (pam_deny), and a password file. Removed on drop.
#[derive(Debug)]
pub struct PamWrapper {
    dir: tempfile::TempDir,
    wrapper: PathBuf,
}

impl PamWrapper {
    /// Probe: `libpam_wrapper.so` and `pam_matrix.so` are installed; else why not.
    pub fn available() -> Result<(), String> {
        Self::wrapper_lib().map(drop)?;
        Self::matrix_module().map(drop)
    }

    /// [`PamWrapper::new`], or `None` after [`crate::skip`] when the wrapper is missing
    /// (a failure in strict mode).
    pub fn new_or_skip(users: &[(&str, &str)]) -> Option<PamWrapper> {
        match Self::available() {
            Ok(()) => Some(Self::new(users)),
            Err(reason) => {
                crate::skip(&reason);
                None
            }
        }
    }

    /// `users` (name, password) may use service [`SERVICE`]. Panics if the wrapper is
    /// missing: probe with [`PamWrapper::available`] first.
    pub fn new(users: &[(&str, &str)]) -> PamWrapper {
        Self::with_options(users, "")
    }

    /// Like [`PamWrapper::new`], with extra `pam_matrix.so` options on both lines
    /// (`verbose`: it also sends info/error messages; `echo`: it asks with echo on).
    pub fn with_options(users: &[(&str, &str)], options: &str) -> PamWrapper {
        let wrapper = Self::wrapper_lib().unwrap_or_else(|e| panic!("{e}"));
        let matrix = Self::matrix_module().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("agentkeys-pam")
            .tempdir()
            .unwrap();
        // The daemon reads these; it runs as root, but keep them readable regardless.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pam = PamWrapper { dir, wrapper };
        std::fs::create_dir(pam.service_dir()).unwrap();
        std::fs::set_permissions(pam.service_dir(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(pam.passdb(), "").unwrap();
        std::fs::set_permissions(pam.passdb(), std::fs::Permissions::from_mode(0o644)).unwrap();
        for (user, password) in users {
            pam.add_entry(user, password, SERVICE);
        }
        let module = format!(
            "{} passdb={} {options}",
            matrix.display(),
            pam.passdb().display()
        );
        pam.write(
            SERVICE,
            &format!("auth required {module}\naccount required {module}\n"),
        );
        // libpam refuses to start without `other`; deny everything there.
        pam.write(
            "other",
            "auth required pam_deny.so\naccount required pam_deny.so\n\
             password required pam_deny.so\nsession required pam_deny.so\n",
        );
        pam
    }

    /// Adds a `pam_matrix` password line: `user` with `password`, allowed for `service`
    /// (another service makes `pam_acct_mgmt` refuse the account).
    pub fn add_entry(&self, user: &str, password: &str, service: &str) {
        for field in [user, password, service] {
            assert!(
                !field.contains([':', '\n', '\0']),
                "pam_matrix fields cannot hold ':', newline or NUL: {field:?}"
            );
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.passdb())
            .unwrap();
        writeln!(f, "{user}:{password}:{service}").unwrap();
    }

    /// The environment that makes a child's libpam use this configuration.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.wrapper.display().to_string()),
            ("PAM_WRAPPER".into(), "1".into()),
            (
                "PAM_WRAPPER_SERVICE_DIR".into(),
                self.service_dir().display().to_string(),
            ),
        ]
    }

    /// The service directory (`PAM_WRAPPER_SERVICE_DIR`): one file per PAM service.
    pub fn service_dir(&self) -> PathBuf {
        self.dir.path().join("pam.d")
    }

    /// The `pam_matrix` password file (`user:password:service` lines). Outside the service
    /// directory: pam_wrapper copies that whole directory to `/tmp/pam.X`, and a crashed
    /// process leaves the copy behind.
    pub fn passdb(&self) -> PathBuf {
        self.dir.path().join("passdb")
    }

    /// `pam_matrix.so passdb=…` as a service-file line would name it.
    pub fn matrix_line(&self) -> String {
        let matrix = Self::matrix_module().unwrap_or_else(|e| panic!("{e}"));
        format!("{} passdb={}", matrix.display(), self.passdb().display())
    }

    /// pam_wrapper's `pam_set_items.so`: sets PAM items from same-named environment
    /// variables (`PAM_AUTHTOK`, `PAM_OLDAUTHTOK`).
    pub fn set_items_module() -> PathBuf {
        Self::find("pam_wrapper/pam_set_items.so").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes the service file `name` (one PAM service) with `text`.
    pub fn write_service(&self, name: &str, text: &str) {
        self.write(name, text);
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.service_dir().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Directories Debian (and others) install shared libraries in, multiarch first.
    fn lib_dirs() -> Vec<PathBuf> {
        let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
        [multiarch.as_str(), "/usr/lib64", "/usr/lib"]
            .iter()
            .map(PathBuf::from)
            .collect()
    }

    fn find(rel: &str) -> Result<PathBuf, String> {
        let dirs = Self::lib_dirs();
        dirs.iter()
            .map(|d| d.join(rel))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "{rel} not found in {dirs:?}: install the Debian package libpam-wrapper \
                     (scripts/test does)"
                )
            })
    }

    fn wrapper_lib() -> Result<PathBuf, String> {
        Self::find("libpam_wrapper.so")
    }

    fn matrix_module() -> Result<PathBuf, String> {
        Self::find("pam_wrapper/pam_matrix.so")
    }
}
