//! Every setting of a binary, read from its clap definitions: the one list
//! the configuration reference and the deployment checks are held against.

use clap::{Args, Command};

/// One setting as the binaries read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable (also the flag's value name).
    pub env: String,
    /// The flag, without its dashes.
    pub flag: Option<String>,
    /// The default as text; `None` when the setting has none.
    pub default: Option<String>,
}

impl Setting {
    /// `FLASHSALE_REQUEST_TIMEOUT_MS` is `--request-timeout-ms`: the flag
    /// keeps the variable's name whatever the field is called.
    pub fn flag_is_named_after_its_variable(&self) -> bool {
        let expected = self
            .env
            .trim_start_matches("FLASHSALE_")
            .to_lowercase()
            .replace('_', "-");
        self.flag.as_deref() == Some(expected.as_str())
    }
}

/// Every setting of `T`, in declaration order.
pub fn documented<T: Args>() -> Vec<Setting> {
    settings_of(&T::augment_args(Command::new("settings")))
}

/// Every setting of a command line (its arguments read from the environment).
pub fn settings_of(command: &Command) -> Vec<Setting> {
    command
        .get_arguments()
        .filter_map(|argument| {
            let env = argument.get_env()?.to_str()?.to_owned();
            let default = argument
                .get_default_values()
                .iter()
                .filter_map(|value| value.to_str())
                .collect::<Vec<_>>()
                .join(",");
            Some(Setting {
                env,
                flag: argument.get_long().map(str::to_owned),
                default: (!default.is_empty()).then_some(default),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiSettings;

    #[test]
    fn every_flag_is_named_after_its_variable() {
        let api = documented::<ApiSettings>();
        let log = documented::<crate::config::LogSettings>();
        let runtime = documented::<crate::config::RuntimeSettings>();
        for setting in api.iter().chain(&log).chain(&runtime) {
            assert!(setting.flag_is_named_after_its_variable(), "{setting:?}");
        }
    }

    #[test]
    fn every_api_setting_is_listed_with_its_default() {
        let settings = documented::<ApiSettings>();
        let timeout = settings
            .iter()
            .find(|setting| setting.env == "FLASHSALE_DEPENDENCY_TIMEOUT_MS")
            .expect("listed");
        assert_eq!(timeout.default.as_deref(), Some("1000"));
        assert!(
            settings
                .iter()
                .any(|setting| setting.env == "FLASHSALE_DATABASE_URL" && setting.default.is_none())
        );
    }
}
