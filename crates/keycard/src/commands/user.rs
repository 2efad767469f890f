//! `keycard user add|passwd|disable|enable|list|totp|logout|grants` (the operations are
//! `keycard_server::manage`'s).

use std::io::Read;

use keycard_core::SecretString;
use keycard_server::Settings;
use keycard_server::manage::{NewUserRequest, UserView};

use super::common::{CliError, flag_names, manager};
use crate::cli::UserCommand;
use crate::output::json;

pub async fn run(settings: &Settings, cmd: UserCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            name,
            password_stdin,
            scopes,
            digest,
        } => {
            let m = manager(settings).await?;
            check_user_name(&name)?;
            if m.store().find_user(&name).await?.is_some() {
                return Err(CliError::Other(format!("user `{name}` already exists")));
            }
            let pw = read_password(password_stdin)?;
            let u = m
                .add_user(NewUserRequest {
                    name,
                    password: pw.expose_secret().to_owned(),
                    scopes,
                    digest,
                })
                .await
                .map_err(passwords)?;
            show(&u, as_json, "Added")
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let m = manager(settings).await?;
            m.get_user(&name).await?;
            let pw = read_password(password_stdin)?;
            let u = m.set_password(&name, pw).await.map_err(passwords)?;
            show(&u, as_json, "Changed the password of")
        }
        UserCommand::Disable { name } => set_disabled(settings, &name, true, as_json).await,
        UserCommand::Enable { name } => set_disabled(settings, &name, false, as_json).await,
        UserCommand::Totp { name } => {
            let t = manager(settings).await?.enroll_totp(&name).await?;
            if as_json {
                return json(&t);
            }
            println!("TOTP enrolled for {name}. Add it to an authenticator app (shown once):");
            println!("  uri:    {}", t.uri);
            println!("  secret: {}   (base32, SHA-1, 6 digits, 30 s)", t.secret);
            println!("The login page now asks {name} for a one-time code.");
            Ok(())
        }
        UserCommand::Logout { name } => {
            let out = manager(settings).await?.logout_user(&name).await?;
            if as_json {
                return json(&out);
            }
            println!(
                "Signed {name} out: {} session(s) ended, {} grant(s) revoked.",
                out.sessions, out.grants
            );
            Ok(())
        }
        UserCommand::Grants { name, revoke } => {
            let m = manager(settings).await?;
            let grants = match revoke.as_deref() {
                None => m.list_grants(&name).await?,
                Some("") => m.revoke_grants(&name, None).await?,
                Some(id) => m.revoke_grants(&name, Some(id)).await?,
            };
            if as_json {
                return json(&grants);
            }
            let verb = if revoke.is_some() {
                "Revoked"
            } else {
                "Grants of"
            };
            if grants.is_empty() {
                println!("{name} holds no grants.");
                return Ok(());
            }
            println!("{verb} {name}:");
            println!(
                "{:<28} {:<20} {:<21} {:<21} SCOPES",
                "ID", "CLIENT", "GRANTED", "EXPIRES"
            );
            for g in grants {
                println!(
                    "{:<28} {:<20} {:<21} {:<21} {}",
                    g.id,
                    g.client_id,
                    g.created_at,
                    g.expires_at,
                    g.scopes.join(" ")
                );
            }
            Ok(())
        }
        UserCommand::List => {
            let users = manager(settings).await?.list_users().await?;
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
    manager(settings)
        .await?
        .set_subject_disabled(name, disabled)
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
    Ok(keycard_server::manage::check_user_name("NAME", name)?)
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

/// A refused password says why, as the policy put it (without the field name).
fn passwords(e: keycard_server::manage::ManageError) -> CliError {
    match flag_names(e) {
        CliError::Usage(m) => {
            CliError::Usage(m.strip_prefix("password: ").unwrap_or(&m).to_owned())
        }
        other => other,
    }
}

fn show(u: &UserView, as_json: bool, verb: &str) -> Result<(), CliError> {
    if as_json {
        return json(u);
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
