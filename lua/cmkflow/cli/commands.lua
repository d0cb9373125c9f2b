-- The command table: every command, its arguments and options, as data. One table drives the
-- parser (cmkflow.cli.parser, over lua-argparse), `--help` and `cmkflow help COMMAND`, the man
-- page and the bash and zsh completions (cmkflow.cli.generate, at build time). Adding an option is
-- adding a row here; the command's module reads it from opts under its long name (opts.param,
-- opts["older-than"]); positional arguments are opts[1], opts[2], ...
local M = {}

local OUTPUTS = { "text", "json", "table" }
M.OUTPUTS = OUTPUTS
M.CLOUDS = { "emulator", "azure", "usgov", "china" }
M.RUN_STATUSES = { "pending", "running", "waiting", "succeeded", "failed", "interrupted", "cancelled" }

-- Options shared by several commands. long: the option's name (and its key in opts); short: its
-- one-letter alias; arg: the value's name in help (none: a flag); list: repeatable, opts[long] is
-- the list; choices: the values allowed; required: must be given.
local O = {
  param = { long = "param", short = "p", arg = "NAME=VALUE", list = true,
            description = "a workflow parameter (repeatable); @FILE.json reads every NAME=VALUE of a JSON object" },
  params = { long = "params", arg = "FILE", list = true,
             description = "the parameters as a JSON object in FILE; -p values given too take precedence" },
  output = { long = "output", short = "o", arg = "FORMAT", choices = OUTPUTS,
             description = "text (for people, the default), json (one JSON document) or table" },
  config = { long = "config", arg = "FILE",
             description = "the configuration file (default: $CMKFLOW_CONFIG; none: the embedded emulator)" },
  cloud = { long = "cloud", arg = "CLOUD", choices = M.CLOUDS,
            description = "emulator (the embedded one), azure, usgov or china" },
  progress = { long = "progress", description = "print each step on stderr even when stderr is not a terminal" },
  yes = { long = "yes", short = "y",
          description = "run a destructive workflow without asking (needed when stdin is not a terminal)" },
}
M.OPTIONS = O

-- Options every command takes (listed under "Global options").
M.GLOBAL = {
  { long = "help", short = "h", description = "show this help and exit" },
  { long = "verbose", short = "v",
    description = "progress, each HTTP request (method, URL without query, status, time) and step notes on stderr" },
  { long = "debug", description = "--verbose plus the HTTP trace (headers with secrets redacted, bodies)" },
  { long = "only-show-errors", description = "no progress and no notes on stderr, only errors" },
}

-- The emulator's options (cmkflow.emulator.cli reads them; docs/emulator.md).
local EMULATOR_OPTIONS = {
  { long = "listen", arg = "ADDR:PORT",
    description = "the loopback address to listen on (default 127.0.0.1:10443; PORT 0 picks a free one)" },
  { long = "proxy", arg = "ADDR:PORT|off",
    description = "the HTTPS proxy for Azure's host names (default 127.0.0.1:10444; off: none)" },
  { long = "proxy-connections", arg = "N", description = "connections the proxy serves at once (1-4096)" },
  { long = "seed", arg = "FILE", description = "tenants, principals and subscriptions to start with (JSON)" },
  { long = "state", arg = "DIR",
    description = "keep the emulator's state, CA and locator in DIR across restarts (default: the per-user state directory's emulator/)" },
  { long = "ca-cert", arg = "FILE", description = "write the emulator's CA certificate (PEM) to FILE" },
  { long = "profile", arg = "PROFILE", choices = { "instant", "realistic" },
    description = "instant (default): no latency; realistic: seeded latency and Azure's replication delays" },
  { long = "delay", arg = "KIND=SECONDS", list = true,
    description = "an eventual-consistency delay; KIND: service_principal, federated_credential, role_assignment" },
  { long = "fault", arg = "SERVICE:METHOD:STATUS[:k=v]", list = true,
    description = "a fault rule (docs/emulator.md): SERVICE entra, graph, arm, keyvault, imds or *; STATUS 100-599, drop or delay" },
  { long = "throttle", arg = "SPEC", list = true,
    description = "arm, graph, keyvault or storage (their published limits), or arm.reads=N, graph.requests=N, ... per minute" },
  { long = "knobs", arg = "FILE", description = "knobs as in the seed's \"knobs\" field (JSON)" },
}

-- How the control subcommands find a running emulator (its locator, or an endpoint and its CA).
local EMULATOR_CONTROL = {
  { long = "state", arg = "DIR", description = "the emulator's state directory (default: the per-user one)" },
  { long = "endpoint", arg = "URL", description = "the emulator's https:// URL, instead of its state directory" },
  { long = "ca-cert", arg = "FILE", description = "the emulator's CA certificate (with --endpoint)" },
  { long = "output", short = "o", arg = "FORMAT", choices = OUTPUTS, description = "text (the default) or json" },
}

local RUN_ID = { name = "RUN_ID", description = "a run id, or a unique prefix of one (cmkflow runs list)" }

-- The commands, in the order help lists them. module/fn: what runs the command (loaded only when it
-- runs: `cmkflow version` starts in milliseconds). commands: subcommands (a command with `default`
-- runs that subcommand when none is given).
M.COMMANDS = {
  { name = "run", module = "cmkflow.cli.run", fn = "run",
    summary = "run a workflow",
    description = "Run a workflow: a file, a stock workflow (cmkflow workflows) or a local one. Without "
      .. "--config or $CMKFLOW_CONFIG it runs against the embedded Azure emulator. A destructive workflow "
      .. "asks before its first change on a terminal and needs --yes otherwise.",
    args = { { name = "WORKFLOW", description = "a workflow file or a workflow name" } },
    options = { O.param, O.params, O.output, O.config, O.cloud, O.progress, O.yes } },
  { name = "plan", module = "cmkflow.cli.run", fn = "plan",
    summary = "list the changes a run would make, making none",
    description = "List every change a run of the workflow would make, making none.",
    args = { { name = "WORKFLOW", description = "a workflow file or a workflow name" } },
    options = { O.param, O.params, O.output, O.config, O.cloud, O.progress,
                { long = "detailed-exitcode",
                  description = "exit 0 when nothing would change, 2 when something would, 1 on any error (Terraform's)" },
                { long = "refresh", arg = "BOOL", choices = { "true", "false" },
                  description = "false: plan from the workflow and policy alone, reading nothing (default true)" } } },
  { name = "resume", module = "cmkflow.cli.resume", fn = "resume",
    summary = "continue a failed, interrupted or waiting run",
    description = "Continue a failed, interrupted or waiting run where it stopped. --param approves the gate "
      .. "it waits at with those values; --config names where its config file is now when it moved.",
    args = { RUN_ID },
    options = { O.param, O.params, O.output, O.config, O.progress } },
  { name = "approve", module = "cmkflow.cli.approve", fn = "approve",
    summary = "decide an approval gate",
    description = "Decide an approval gate. --param values (the customer's key_vault_uri and key_name) are "
      .. "checked and handed to the steps after the gate; approve again to correct them until the run has "
      .. "succeeded.",
    args = { RUN_ID, { name = "GATE", description = "the gate's name (cmkflow runs show RUN_ID)" } },
    options = { { long = "reject", description = "reject instead of approving" },
                { long = "note", arg = "TEXT", description = "a note kept with the decision" },
                O.param, O.params, O.output } },
  { name = "runs", summary = "the run store: list, show, cancel, prune",
    description = "The run store ($CMKFLOW_STATE_DIR/runs.db, default ~/.local/state/cmkflow).",
    commands = {
      { name = "list", module = "cmkflow.cli.runs", fn = "list",
        summary = "list runs, newest first",
        description = "List runs, newest first: id, workflow, customer, status, started, duration.",
        options = { { long = "status", arg = "STATUS", choices = M.RUN_STATUSES, description = "only runs in this status" },
                    { long = "workflow", arg = "NAME", description = "only runs of this workflow" },
                    { long = "customer", arg = "NAME", description = "only runs for this customer" },
                    { long = "limit", arg = "N", description = "at most N runs (default 50)" },
                    O.output } },
      { name = "show", module = "cmkflow.cli.runs", fn = "show",
        summary = "a run with its steps, errors and approvals",
        description = "A run with its parameters, steps, errors, approvals and outputs.",
        args = { RUN_ID }, options = { O.output } },
      { name = "cancel", module = "cmkflow.cli.runs", fn = "cancel",
        summary = "end a run for good",
        description = "End an unfinished run for good: it will not be resumed.",
        args = { RUN_ID }, options = { O.output } },
      { name = "prune", module = "cmkflow.cli.runs", fn = "prune",
        summary = "delete finished runs older than a duration",
        description = "Delete runs (with their journal) last updated longer ago than DURATION. Unfinished runs "
          .. "(pending, running, waiting, failed, interrupted) are kept unless --unfinished is given.",
        options = { { long = "older-than", arg = "DURATION", required = true,
                      description = "e.g. 30d, 12h, 45m, 90s, 2w" },
                    { long = "unfinished", description = "prune unfinished runs too" },
                    { long = "dry-run", description = "say what would be removed, remove nothing" },
                    O.output } },
    } },
  { name = "workflows", summary = "list the stock and local workflows",
    description = "The stock workflows and the local ones (*.lua workflow definitions in the current "
      .. "directory and in $CMKFLOW_WORKFLOWS_DIR) with their descriptions.",
    default = "list",
    options = { O.output },
    commands = {
      { name = "list", module = "cmkflow.cli.workflows", fn = "list",
        summary = "the workflows and their descriptions",
        description = "The stock and local workflows with their descriptions.",
        options = { O.output } },
      { name = "show", module = "cmkflow.cli.workflows", fn = "show",
        summary = "a workflow's parameters and steps",
        description = "A workflow's parameters (type, default, required) and its steps with the tenant each touches.",
        args = { { name = "NAME", description = "a workflow name or file" } },
        options = { O.output } },
    } },
  { name = "handoff", module = "cmkflow.cli.handoff", fn = "handoff",
    summary = "write the customer kit of a run waiting at its handoff",
    description = "Write the customer kit of a run waiting at its handoff: README, consent link, an az CLI "
      .. "script, a customer.lua template and the customer-authorize command (docs/handoff.md).",
    args = { RUN_ID },
    options = { { long = "out", arg = "DIR", required = true, description = "the directory to write the kit to" },
                O.output } },
  { name = "emulator",
    summary = "run the Azure emulator, or drive a running one",
    description = "Run the Azure emulator in the foreground on https://127.0.0.1:10443, with an HTTPS proxy for "
      .. "Azure's host names on 127.0.0.1:10444; prints {\"ready\":true,\"url\":...,\"ca_cert\":...,\"proxy\":...} "
      .. "on stdout when ready and records itself in its state directory, where cloud = \"emulator\" in a "
      .. "config finds it (docs/emulator.md). Its subcommands drive a running emulator's control API.",
    default = "serve",
    options = EMULATOR_OPTIONS,
    commands = {
      { name = "serve", module = "cmkflow.cli.emulator", fn = "serve",
        summary = "run the emulator in the foreground (the default)",
        description = "Run the emulator in the foreground (what `cmkflow emulator` does without a subcommand).",
        options = EMULATOR_OPTIONS },
      { name = "state", module = "cmkflow.cli.emulator", fn = "state",
        summary = "the running emulator's whole state (JSON)",
        description = "Print the running emulator's state: tenants, resources, keys (GET /_emulator/state).",
        options = EMULATOR_CONTROL },
      { name = "reset", module = "cmkflow.cli.emulator", fn = "reset",
        summary = "back to the seed",
        description = "Reset the running emulator to its seed: resources, clock and knobs.",
        options = EMULATOR_CONTROL },
      { name = "snapshot", module = "cmkflow.cli.emulator", fn = "snapshot",
        summary = "save the world under a name",
        description = "Save the running emulator's world as a named snapshot.",
        args = { { name = "NAME", description = "the snapshot's name" } }, options = EMULATOR_CONTROL },
      { name = "restore", module = "cmkflow.cli.emulator", fn = "restore",
        summary = "bring a snapshot's world back",
        description = "Restore the running emulator's world from a named snapshot.",
        args = { { name = "NAME", description = "the snapshot's name" } }, options = EMULATOR_CONTROL },
      { name = "journal", module = "cmkflow.cli.emulator", fn = "journal",
        summary = "the requests it answered",
        description = "The requests the running emulator answered: sequence, time, method, status, host, path.",
        options = { EMULATOR_CONTROL[1], EMULATOR_CONTROL[2], EMULATOR_CONTROL[3], EMULATOR_CONTROL[4],
                    { long = "since", arg = "SEQ", description = "only requests after this sequence number" },
                    { long = "service", arg = "SERVICE", description = "only this service's (entra, graph, arm, keyvault, blob, imds)" } } },
    } },
  { name = "demo", module = "cmkflow.cli.demo", fn = "demo",
    summary = "one token and one ARM call against the embedded emulator",
    description = "Run the smoke workflow (one token, one ARM call) against the embedded emulator.",
    options = { O.output } },
  { name = "version", module = "cmkflow.cli.version", fn = "version",
    summary = "the versions of cmkflow and its libraries",
    description = "Print the versions of cmkflow and the libraries it runs on.",
    options = { O.output } },
  { name = "help", module = "cmkflow.cli", fn = "help",
    summary = "help for a command",
    description = "Help for a command (cmkflow help runs prune), or the list of commands.",
    args = { { name = "COMMAND", optional = true, description = "a command" },
             { name = "SUBCOMMAND", optional = true, description = "a subcommand (runs list, workflows show)" } } },
}

-- What the man page says besides the commands.
M.PROGRAM = {
  name = "cmkflow",
  summary = "cross-tenant customer-managed keys for Azure Storage, as code",
  description = "cmkflow automates cross-tenant customer-managed keys for Azure Storage: an ISV's storage "
    .. "account, in the ISV's tenant, encrypted with a key in the customer's Key Vault in the customer's tenant. "
    .. "Workflows are Lua files; runs are journaled and resumable; with no configuration every command runs "
    .. "against the embedded Azure emulator.",
  exit_codes = {
    { 0, "done" }, { 1, "a remote call or a workflow step failed" },
    { 2, "usage: bad command line, parameter, configuration or workflow source; nothing was sent to Azure" },
    { 4, "authentication: a credential was refused" }, { 6, "waiting at an approval gate" },
    { 7, "verify could not check every link" }, { 130, "interrupted (SIGINT)" }, { 143, "terminated (SIGTERM)" },
  },
  environment = {
    { "CMKFLOW_CONFIG", "the configuration file when --config is not given" },
    { "CMKFLOW_STATE_DIR", "the run store and the embedded emulator's state (default ~/.local/state/cmkflow)" },
    { "CMKFLOW_WORKFLOWS_DIR", "a directory of local workflows (cmkflow workflows)" },
    { "AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET", "the ISV credential when no config file is given" },
  },
  see_also = "docs/quickstart.md, docs/workflows.md, docs/configuration.md, docs/exit-codes.md",
}

return M
