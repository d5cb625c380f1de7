//! docker-compose.yml and the Dockerfile describe the same cluster as
//! `scripts/up`. No Docker engine runs where this project is built, so the
//! files are checked for structure: they parse, every name they use exists,
//! and their ports, settings and Redis flags match the scripts and the
//! binaries.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use clap::CommandFactory;
use flashsale::config::{ApiSettings, LogSettings, RuntimeSettings, documented, settings_of};
use flashsale_workers::settings::WorkerCli;
use serde_norway::Value;

/// The repository: this test lives in the worker's package because it
/// checks both binaries' settings.
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &str) -> String {
    let full = repo().join(path);
    fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn compose() -> Value {
    let mut document: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    document.apply_merge().expect("merge keys resolve");
    document
}

fn services(compose: &Value) -> &serde_norway::Mapping {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
}

fn service_names(compose: &Value) -> BTreeSet<String> {
    services(compose)
        .keys()
        .map(|key| key.as_str().expect("service names are strings").to_owned())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every `FLASHSALE_*` variable the binaries read, from their own
/// settings definitions.
fn settings_the_binaries_read() -> BTreeSet<String> {
    let api = documented::<ApiSettings>()
        .into_iter()
        .chain(documented::<LogSettings>())
        .chain(documented::<RuntimeSettings>());
    let worker = settings_of(&WorkerCli::command());
    api.chain(worker).map(|setting| setting.env).collect()
}

/// `NAME=${OVERRIDE:-default}` in a sourced shell file: the default.
fn shell_default(path: &str, name: &str) -> String {
    let text = read(path);
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{path} sets {name}"));
    let default = line
        .split(":-")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("{name} in {path} has a default"));
    default.to_owned()
}

#[test]
fn the_compose_file_names_the_whole_topology_and_every_dependency_exists() {
    let compose = compose();
    let names = service_names(&compose);
    for expected in [
        "postgres", "redis", "migrate", "api-1", "api-2", "worker", "nginx",
    ] {
        assert!(
            names.contains(expected),
            "service {expected} missing: {names:?}"
        );
    }

    for (name, service) in services(&compose) {
        let Some(depends_on) = service["depends_on"].as_mapping() else {
            continue;
        };
        for (target, condition) in depends_on {
            let target = target.as_str().expect("a service name");
            let target_service = &compose["services"][target];
            assert!(
                names.contains(target),
                "{name:?} depends on {target}, which is not a service"
            );
            match condition["condition"].as_str() {
                Some("service_healthy") => assert!(
                    target_service["healthcheck"].is_mapping(),
                    "{name:?} waits for {target} to be healthy, but it has no healthcheck"
                ),
                Some("service_completed_successfully") => assert_eq!(
                    target_service["restart"].as_str(),
                    Some("no"),
                    "{name:?} waits for {target} to complete; it must not restart"
                ),
                other => panic!("{name:?} -> {target}: unexpected condition {other:?}"),
            }
        }
    }
}

#[test]
fn every_setting_the_compose_file_passes_is_one_the_binaries_read() {
    let compose = compose();
    let known = settings_the_binaries_read();
    assert!(
        known.contains("FLASHSALE_DATABASE_URL"),
        "settings scan found {known:?}"
    );

    for name in ["migrate", "api-1", "api-2", "worker"] {
        let environment = compose["services"][name]["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name} has an environment mapping"));
        let passed: BTreeSet<String> = environment
            .keys()
            .map(|key| key.as_str().expect("a variable name").to_owned())
            .collect();
        for variable in &passed {
            assert!(
                known.contains(variable),
                "{name} sets {variable}, which no binary reads"
            );
        }
        for required in [
            "FLASHSALE_DATABASE_URL",
            "FLASHSALE_REDIS_URL",
            "FLASHSALE_JWT_SECRET",
            "FLASHSALE_AUTH_MODE",
        ] {
            assert!(passed.contains(required), "{name} lacks {required}");
        }
    }

    let entrypoint = read("docker/nginx-entrypoint.sh");
    let nginx_environment = compose["services"]["nginx"]["environment"]
        .as_mapping()
        .expect("nginx has an environment mapping");
    for variable in nginx_environment.keys() {
        let variable = variable.as_str().expect("a variable name");
        assert!(
            entrypoint.contains(variable),
            "nginx sets {variable}, which its entrypoint does not read"
        );
    }
}

/// No secret ships with the compose file: each is `${NAME:?message}`, so
/// `docker compose up` stops with the message until the deployment chose
/// its own; the identity mode is chosen the same way.
#[test]
fn the_compose_file_ships_no_secret_and_refuses_to_start_without_them() {
    let text = read("docker-compose.yml");
    for variable in [
        "FLASHSALE_JWT_SECRET",
        "FLASHSALE_PG_PASSWORD",
        "FLASHSALE_AUTH_MODE",
    ] {
        let uses: Vec<&str> = text
            .match_indices(&format!("${{{variable}"))
            .map(|(at, _)| &text[at..])
            .collect();
        assert!(!uses.is_empty(), "compose does not use {variable}");
        for used in uses {
            assert!(
                used.starts_with(&format!("${{{variable}:?")),
                "{variable} must be required (`${{{variable}:?...}}`), not defaulted: {}",
                used.lines().next().unwrap_or_default()
            );
        }
    }
    let compose = compose();
    let password = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        .as_str()
        .unwrap();
    assert!(
        password.starts_with("${FLASHSALE_PG_PASSWORD:?"),
        "{password}"
    );
}

#[test]
fn ports_upstreams_and_redis_flags_match_the_scripts() {
    let compose = compose();

    // The public port: the same variable and default as scripts/up.
    let published = strings(&compose["services"]["nginx"]["ports"]);
    let script_port = shell_default("scripts/lib/cluster.sh", "PUBLIC_PORT");
    assert_eq!(
        published,
        vec![format!("127.0.0.1:${{FLASHSALE_PORT:-{script_port}}}:8080")],
        "nginx publishes the scripts' port"
    );

    // nginx's upstreams are exactly the api services, on the port the image
    // binds and the healthchecks probe.
    let bind_port = read("Dockerfile")
        .lines()
        .find_map(|line| line.strip_prefix("ENV FLASHSALE_BIND=0.0.0.0:"))
        .expect("the Dockerfile sets FLASHSALE_BIND")
        .trim()
        .to_owned();
    let upstreams: BTreeSet<String> =
        compose["services"]["nginx"]["environment"]["FLASHSALE_API_NODES"]
            .as_str()
            .expect("FLASHSALE_API_NODES")
            .split(',')
            .map(|node| {
                let (host, port) = node.split_once(':').expect("host:port");
                assert_eq!(port, bind_port, "upstream {node} uses the API port");
                host.to_owned()
            })
            .collect();
    let api_services: BTreeSet<String> = service_names(&compose)
        .into_iter()
        .filter(|name| name.starts_with("api-"))
        .collect();
    assert_eq!(upstreams, api_services, "every API service is an upstream");
    for api in &api_services {
        let probe = strings(&compose["services"][api.as_str()]["healthcheck"]["test"]).join(" ");
        assert!(
            probe.contains(&format!("127.0.0.1:{bind_port}/api/health/ready")),
            "{api} probes readiness on its own port: {probe}"
        );
    }

    // Redis keeps stock the way scripts/lib/services.sh runs it.
    let redis = strings(&compose["services"]["redis"]["command"]).join(" ");
    let appendonly = shell_default("scripts/lib/services.sh", "REDIS_APPENDONLY");
    let appendfsync = shell_default("scripts/lib/services.sh", "REDIS_APPENDFSYNC");
    let rewrite_size = shell_default("scripts/lib/services.sh", "REDIS_AOF_REWRITE_MIN_SIZE");
    for flag in [
        format!("--appendonly {appendonly}"),
        format!("--appendfsync {appendfsync}"),
        format!("--auto-aof-rewrite-min-size {rewrite_size}"),
        "--maxmemory-policy noeviction".to_owned(),
    ] {
        assert!(redis.contains(&flag), "redis runs with {flag}: {redis}");
    }
    assert!(
        read("scripts/lib/services.sh").contains("--maxmemory-policy noeviction"),
        "the scripts' Redis is noeviction too"
    );
}

#[test]
fn the_dockerfile_is_a_multi_stage_build_of_the_binaries_compose_runs() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    assert!(dockerfile.contains("cargo build --release --locked --workspace --bins"));

    let binaries: Vec<String> = [read("Cargo.toml"), read("workers/Cargo.toml")]
        .iter()
        .flat_map(|manifest| {
            manifest
                .split("[[bin]]")
                .skip(1)
                .filter_map(|section| {
                    section
                        .lines()
                        .find_map(|line| line.strip_prefix("name = \""))
                        .and_then(|rest| rest.split('"').next())
                        .map(str::to_owned)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(binaries, ["flashsale-api", "flashsale-worker"]);
    let runtime_copy = dockerfile
        .lines()
        .find(|line| line.starts_with("COPY --from=build"))
        .expect("the runtime stage copies from the build stage");
    for binary in &binaries {
        assert!(
            runtime_copy.contains(&format!("/src/target/release/{binary}")),
            "the image ships {binary}"
        );
    }

    let compose = compose();
    for (name, service) in services(&compose) {
        if service["build"].is_null() {
            continue;
        }
        let command = strings(&service["command"]);
        let program = command.first().expect("a command");
        assert!(
            binaries.contains(program),
            "{name:?} runs {program}, which the image does not ship"
        );
    }
}

/// A directory of its own for one test, removed however the test ends.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        fs::remove_dir_all(&path).ok();
        fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        fs::remove_dir_all(&self.0).ok();
    }
}

/// Copies what the Dockerfile's build stage copies into `context`, as it
/// copies it.
fn copy_build_stage_files(dockerfile: &str, context: &Path) {
    let mut stage = 0;
    let build_stage = dockerfile.lines().filter(|line| {
        stage += usize::from(line.starts_with("FROM "));
        stage == 1
    });
    for line in build_stage.filter(|line| line.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (sources, destination) = (&words[1..words.len() - 1], words[words.len() - 1]);
        let plain = !sources.is_empty()
            && sources.iter().all(|source| !source.starts_with('-'))
            && (destination == "./" || sources == [destination]);
        assert!(
            plain,
            "unsupported COPY form (this test reads `COPY <sources> ./` and `COPY <dir> <dir>`): {line}"
        );
        for source in sources {
            let copied = Command::new("cp")
                .arg("-r")
                .arg(repo().join(source))
                .arg(context)
                .status()
                .unwrap();
            assert!(
                copied.success(),
                "the Dockerfile copies {source}, which does not exist"
            );
        }
    }
}

/// Every literal `include_str!`/`include_bytes!` path under `dir` that a
/// release build of the binaries compiles (not in `tests/`, `benches/` or
/// after a file's `#[cfg(test)]`), resolved from the file that names it.
/// Paths a macro passes on (`with_records!` in the Redis store) are not
/// seen; they name files beside literal ones.
fn included_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("tests") && !path.ends_with("benches") {
                found.extend(included_files(&path));
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let whole = fs::read_to_string(&path).unwrap();
            let source = whole.split("#[cfg(test)]").next().unwrap();
            let calls = source
                .match_indices("include_str!(\"")
                .chain(source.match_indices("include_bytes!(\""));
            for (at, call) in calls {
                let included = source[at + call.len()..].split('"').next().unwrap();
                found.push(path.parent().unwrap().join(included));
            }
        }
    }
    found
}

/// The build stage sees only what the Dockerfile copies, and no Docker
/// engine runs here to build it. Those files alone, copied as the build
/// stage copies them, must make a workspace cargo loads (a missing member,
/// such as `testkit` once, stops the build before anything compiles) and
/// hold everything the code embeds at compile time: the migrations and
/// every `include_str!` (the pages under `web/` were once left out).
#[test]
fn the_files_the_build_stage_copies_make_the_workspace_and_what_it_embeds() {
    let context = ScratchDir::new("flashsale-image");
    copy_build_stage_files(&read("Dockerfile"), &context.0);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `--no-deps`: every member's manifest and targets, without resolving
    // crates this platform never downloads.
    let loaded = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(&context.0)
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "the build stage's files are not a workspace cargo can load:\n{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(
        context.0.join("Cargo.lock").is_file(),
        "the build stage copies the lock file (its build runs --locked)"
    );

    let listing = |dir: &Path| -> BTreeSet<_> {
        fs::read_dir(dir)
            .map(|entries| entries.map(|entry| entry.unwrap().file_name()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        listing(&context.0.join("migrations")),
        listing(&repo().join("migrations")),
        "sqlx::migrate!() embeds migrations/: the build stage copies all of it"
    );
    let embedded = included_files(&context.0);
    assert!(
        !embedded.is_empty(),
        "the scan finds the Lua scripts at least"
    );
    for file in embedded {
        assert!(
            file.is_file(),
            "{} is embedded at compile time but not copied by the build stage",
            file.strip_prefix(&context.0).unwrap_or(&file).display()
        );
    }
}

#[test]
fn the_nginx_template_is_rendered_the_same_way_by_both_deployments() {
    let template = read("nginx/nginx.conf.template");
    let placeholders: BTreeSet<&str> = template
        .split("__")
        .skip(1)
        .step_by(2)
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(placeholders.contains("UPSTREAMS"), "found {placeholders:?}");

    let entrypoint = read("docker/nginx-entrypoint.sh");
    let cluster = read("scripts/lib/cluster.sh");
    for name in &placeholders {
        let token = format!("__{name}__");
        assert!(
            entrypoint.contains(&token),
            "docker/nginx-entrypoint.sh fills {token}"
        );
        assert!(
            cluster.contains(&token),
            "scripts/lib/cluster.sh fills {token}"
        );
    }

    let compose = compose();
    for volume in strings(&compose["services"]["nginx"]["volumes"]) {
        let host_path = volume.split(':').next().expect("host:container");
        assert!(
            repo().join(host_path).exists(),
            "nginx mounts {host_path}, which exists"
        );
    }
}
