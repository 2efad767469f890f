//! `keycard user add|passwd|disable|enable|list`.

use std::io::Read;

use keycard_core::password::{self, check_policy};
use keycard_core::user::DigestSecrets;
use keycard_core::{Scopes, SecretString, new_id};
use keycard_server::{Settings, now_secs};
use keycard_store::{NewUser, Store, UserRow};
use serde::Serialize;

use super::{CliError, check_name, master, open_store};
use crate::cli::UserCommand;
use crate::output::json;

#[derive(Serialize)]
struct Shown {
    name: String,
    scopes: Vec<String>,
    status: &'static str,
    digest: bool,
    password_id: String,
    created_at: String,
    password_changed_at: String,
    disabled_at: Option<String>,
}

pub async fn run(settings: &Settings, cmd: UserCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            name,
            password_stdin,
            scopes,
            digest,
        } => {
            check_user_name(&name)?;
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let store = open_store(settings).await?;
            if store.find_user(&name).await?.is_some() {
                return Err(CliError::Other(format!("user `{name}` already exists")));
            }
            let pw = read_password(password_stdin)?;
            check_policy(&name, pw.expose_secret()).map_err(|e| CliError::Usage(e.to_string()))?;
            let (hash, sealed) = hash_and_seal(settings, &name, &pw, digest).await?;
            let now = now_secs();
            let new = NewUser {
                name: name.clone(),
                password_id: new_password_id()?,
                password_hash: hash,
                digest_sealed: sealed,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
            };
            store.create_user(&new).await?;
            show_one(&store, &name, as_json, "Added").await
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let store = open_store(settings).await?;
            let user = store.get_user(&name).await?;
            let pw = read_password(password_stdin)?;
            check_policy(&name, pw.expose_secret()).map_err(|e| CliError::Usage(e.to_string()))?;
            // Digest stays on for users who had it: its hash is replaced with the password.
            let digest = user.digest_sealed.is_some();
            let (hash, sealed) = hash_and_seal(settings, &name, &pw, digest).await?;
            store
                .set_password(
                    &name,
                    &new_password_id()?,
                    &hash,
                    sealed.as_deref(),
                    now_secs(),
                )
                .await?;
            show_one(&store, &name, as_json, "Changed the password of").await
        }
        UserCommand::Disable { name } => set_disabled(settings, &name, true, as_json).await,
        UserCommand::Enable { name } => set_disabled(settings, &name, false, as_json).await,
        UserCommand::Totp { name } => {
            let store = open_store(settings).await?;
            store.get_user(&name).await?;
            let seed =
                keycard_core::totp::generate_seed().map_err(|e| CliError::Other(e.to_string()))?;
            let sealed = keycard_core::user::seal_totp_seed(
                &master(settings)?.sealer(),
                &name,
                seed.expose_secret(),
            )
            .map_err(|e| CliError::Other(e.to_string()))?;
            store.set_totp(&name, &sealed, now_secs()).await?;
            let secret = keycard_core::totp::base32_encode(seed.expose_secret());
            let uri = keycard_core::totp::otpauth_uri("keycard", &name, seed.expose_secret());
            if as_json {
                return json(&serde_json::json!({ "name": name, "secret": secret, "uri": uri }));
            }
            println!("TOTP enrolled for {name}. Add it to an authenticator app (shown once):");
            println!("  uri:    {uri}");
            println!("  secret: {secret}   (base32, SHA-1, 6 digits, 30 s)");
            println!("The login page now asks {name} for a one-time code.");
            Ok(())
        }
        UserCommand::List => {
            let store = open_store(settings).await?;
            let users: Vec<Shown> = store.list_users().await?.into_iter().map(shown).collect();
            if as_json {
                return json(&users);
            }
            if users.is_empty() {
                println!("No users.");
                return Ok(());
            }
            println!(
                "{:<20} {:<9} {:<7} {:<21} {:<21} SCOPES",
                "NAME", "STATUS", "DIGEST", "CREATED", "PASSWORD CHANGED"
            );
            for u in users {
                println!(
                    "{:<20} {:<9} {:<7} {:<21} {:<21} {}",
                    u.name,
                    u.status,
                    if u.digest { "yes" } else { "no" },
                    u.created_at,
                    u.password_changed_at,
                    u.scopes.join(" ")
                );
            }
            Ok(())
        }
    }
}

async fn set_disabled(
    settings: &Settings,
    name: &str,
    disabled: bool,
    as_json: bool,
) -> Result<(), CliError> {
    let store = open_store(settings).await?;
    store
        .set_subject_disabled(name, disabled, now_secs())
        .await?;
    if as_json {
        return json(&serde_json::json!({"name": name, "disabled": disabled}));
    }
    if disabled {
        println!(
            "Disabled {name}: every keycard instance refuses its credentials within a second."
        );
    } else {
        println!("Enabled {name}.");
    }
    Ok(())
}

/// User names travel in Basic credentials, where a colon ends the user-id (RFC 7617 §2).
fn check_user_name(name: &str) -> Result<(), CliError> {
    check_name("NAME", name)?;
    if name.contains(':') {
        return Err(CliError::Usage(
            "NAME: a user name cannot contain `:` (HTTP Basic splits on it)".into(),
        ));
    }
    Ok(())
}

pub(super) fn new_password_id() -> Result<String, CliError> {
    new_id("pwd").map_err(|e| CliError::Other(e.to_string()))
}

/// Reads the password: all of stdin minus one trailing newline, or a prompt (asked twice).
fn read_password(from_stdin: bool) -> Result<SecretString, CliError> {
    if from_stdin {
        let mut buf = String::new();
        let read = std::io::stdin().read_to_string(&mut buf);
        let pw = SecretString::new(buf);
        read.map_err(|e| CliError::Other(format!("cannot read the password from stdin: {e}")))?;
        let text = pw.expose_secret();
        let trimmed = text.strip_suffix('\n').unwrap_or(text);
        return Ok(SecretString::new(trimmed.to_owned()));
    }
    let first = rpassword::prompt_password("Password: ").map(SecretString::new);
    let first = first.map_err(|e| {
        CliError::Usage(format!(
            "cannot prompt for a password ({e}); use --password-stdin"
        ))
    })?;
    let again = rpassword::prompt_password("Password (again): ")
        .map(SecretString::new)
        .map_err(|e| CliError::Usage(format!("cannot prompt for a password: {e}")))?;
    if first != again {
        return Err(CliError::Usage("the passwords differ".into()));
    }
    Ok(first)
}

/// The argon2id hash (on a blocking thread: it takes tens of milliseconds and 19 MiB), and
/// for `digest` the sealed RFC 7616 secrets.
pub(super) async fn hash_and_seal(
    settings: &Settings,
    name: &str,
    pw: &SecretString,
    digest: bool,
) -> Result<(String, Option<Vec<u8>>), CliError> {
    let for_hash = pw.clone();
    let hash =
        tokio::task::spawn_blocking(move || password::hash(for_hash.expose_secret().as_bytes()))
            .await
            .map_err(|e| CliError::Other(e.to_string()))?
            .map_err(|e| CliError::Other(e.to_string()))?;
    let sealed = if digest {
        let secrets = DigestSecrets::derive(name, &settings.digest.realm, pw.expose_secret());
        Some(
            secrets
                .seal(&master(settings)?.sealer(), name)
                .map_err(|e| CliError::Other(e.to_string()))?,
        )
    } else {
        None
    };
    Ok((hash, sealed))
}

async fn show_one(store: &Store, name: &str, as_json: bool, verb: &str) -> Result<(), CliError> {
    let u = shown(store.get_user(name).await?);
    if as_json {
        return json(&u);
    }
    println!(
        "{verb} user {} (methods: basic{}; scopes: {})",
        u.name,
        if u.digest { ", digest" } else { "" },
        if u.scopes.is_empty() {
            "(none)".to_owned()
        } else {
            u.scopes.join(" ")
        }
    );
    Ok(())
}

fn shown(u: UserRow) -> Shown {
    Shown {
        scopes: Scopes::parse(&u.scopes)
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        status: if u.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        },
        digest: u.digest_sealed.is_some(),
        created_at: keycard_core::time::rfc3339(u.created_at),
        password_changed_at: keycard_core::time::rfc3339(u.password_changed_at),
        disabled_at: u.disabled_at.map(keycard_core::time::rfc3339),
        password_id: u.password_id,
        name: u.name,
    }
}
