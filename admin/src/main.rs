//! `capa-admin`: see the crate documentation and `capa-admin preview --help`.

use capa_admin::{EXIT_INPUT, Format, PreviewOptions, run_preview};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "capa-admin",
    version,
    about = "The cluster admin's tool for capa-annotator (scale AWS MachineSets from zero)",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what the capa-annotator policy would do to MachineSets and MachineDeployments, before
    /// installing anything
    #[command(after_help = PREVIEW_EXAMPLES)]
    Preview(PreviewArgs),
}

const PREVIEW_EXAMPLES: &str = "\
Each MachineSet (Machine API or Cluster API) and MachineDeployment goes through the policy's own
decision (the code of policy.wasm, run natively) as a CREATE at admission; a Cluster API object's
AWSMachineTemplate is read from the same inputs. No cluster access, no network: it reads only the
files you give.

Exit status: 0 done; 1 with --fail-on-change when any object would change; 2 an input, the
settings or the ConfigMap cannot be read (the message names the file and the place; nothing else
is printed).

Examples:
  # what admission would do to the MachineSets of your cluster (built-in table)
  kubectl get machinesets -n openshift-machine-api -o yaml | capa-admin preview -

  # Cluster API: the objects and their templates
  kubectl get machinedeployments,machinesets.cluster.x-k8s.io,awsmachinetemplates -A -o yaml | capa-admin preview -

  # with the table the refresher wrote, and your policy (its settings, rules and namespaceSelector)
  kubectl get cm -n openshift-machine-api machineset-instance-types -o yaml > table.yaml
  capa-admin preview --configmap table.yaml --settings deploy/policy/clusteradmissionpolicy.yaml machinesets/*.yaml

  # CI check in a GitOps repository: fail when git lacks what the policy would write
  capa-admin preview --fail-on-change --patch clusters/prod/machinesets/

  # for scripts
  capa-admin preview -o json machinesets.yaml | jq '.summary'

  # the objects as admission would store them: what to commit to git
  capa-admin preview -o yaml machinesets.yaml > machinesets.annotated.yaml";

#[derive(clap::Args)]
struct PreviewArgs {
    /// Files of MachineSets, MachineDeployments, their AWSMachineTemplates and Namespaces (YAML or
    /// JSON: one object, several documents, or a List such as `kubectl get machinesets -A -o yaml`
    /// prints); `-` reads stdin; a directory means its *.yaml, *.yml and *.json files,
    /// recursively, where objects of other kinds (a kustomization.yaml, …) are passed over
    #[arg(required = true, value_name = "FILE")]
    inputs: Vec<String>,
    /// The table ConfigMap (`kubectl get cm -n openshift-machine-api machineset-instance-types -o yaml`);
    /// without it the built-in table answers
    #[arg(long, value_name = "FILE")]
    configmap: Option<String>,
    /// Policy settings: the `settings` of the ClusterAdmissionPolicy (YAML/JSON), or the whole
    /// ClusterAdmissionPolicy (then its rules and selectors decide which objects it sees)
    #[arg(long, value_name = "FILE")]
    settings: Option<String>,
    /// The Kubewarden controller's namespace (`cattle-kubewarden-system` on Rancher): the webhook
    /// of a ClusterAdmissionPolicy given as --settings never sends objects of that namespace
    #[arg(long, value_name = "NAMESPACE", default_value = "kubewarden")]
    kubewarden_namespace: String,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Also print the JSON patch the policy server would send (always in -o json)
    #[arg(long)]
    patch: bool,
    /// Exit 1 when any object would change
    #[arg(long)]
    fail_on_change: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
    /// the objects as admission would store them (patched)
    Yaml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Preview(args) = cli.command;
    let inputs = match capa_admin::input::expand_dirs(&args.inputs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("capa-admin: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let opts = PreviewOptions {
        inputs,
        configmap: args.configmap,
        settings: args.settings,
        kubewarden_namespace: Some(args.kubewarden_namespace),
        format: match args.output {
            OutputFormat::Text => Format::Text,
            OutputFormat::Json => Format::Json,
            OutputFormat::Yaml => Format::Yaml,
        },
        patch: args.patch,
        fail_on_change: args.fail_on_change,
    };
    match run_preview(&opts, &mut std::io::stdin().lock()) {
        Ok(out) => {
            for note in &out.notes {
                eprintln!("capa-admin: {note}");
            }
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.stdout.as_bytes()).is_err() {
                return ExitCode::from(EXIT_INPUT);
            }
            ExitCode::from(out.exit)
        }
        Err(e) => {
            eprintln!("capa-admin: {e}");
            ExitCode::from(EXIT_INPUT)
        }
    }
}
