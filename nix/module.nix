# services.deploybot: the bot as a hardened systemd service (README, "Run it as a service").
#
# Secrets never enter the Nix store or the unit's environment: tokenFile, ageKeyFile,
# ageSshKeyFile and sshKeyFile are paths on the host (sops-nix, agenix, or a file you put
# there), handed to the service with LoadCredential=; the environment only names the
# credentials, and the bot reads them from $CREDENTIALS_DIRECTORY.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkOption
    types
    ;

  cfg = config.services.deploybot;
  toml = pkgs.formats.toml { };

  stateDir = "/var/lib/deploybot";
  cacheDir = "/var/cache/deploybot";
  # A stable path: a changed inventory reaches the running bot through `systemctl reload`
  # (SIGHUP) instead of a restart that would interrupt running jobs.
  inventoryPath = "/etc/deploybot/machines.toml";

  # Names under $CREDENTIALS_DIRECTORY (LoadCredential=NAME:PATH).
  credentialNames = {
    tokenFile = "telegram-bot-token";
    ageKeyFile = "sops-age-key";
    ageSshKeyFile = "sops-age-ssh-key";
    sshKeyFile = "ssh-key";
  };

  # Optional inventory keys: null leaves the key out of machines.toml, so the bot's own
  # default applies (machines.example.toml documents each).
  optional =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  duration =
    types.strMatching "([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+"
    // {
      description = "duration such as 90s, 15m or 1h30m";
    };
  sopsKey =
    types.strMatching "[A-Za-z0-9_.-]{1,128}"
    // {
      description = "sops key name";
    };
  publicKey =
    types.strMatching "((ssh-ed25519|ecdsa-sha2-nistp[0-9]+|ssh-rsa) [A-Za-z0-9+/=]+( .*)?)?"
    // {
      description = "OpenSSH public key line (\"ssh-ed25519 AAAA…\") or \"\"";
    };
  cron =
    types.strMatching "([^[:space:]]+([[:space:]]+[^[:space:]]+){4})?"
    // {
      description = "cron expression of five fields, or \"\"";
    };
  tag =
    types.strMatching "[a-z0-9][a-z0-9_-]{0,31}"
    // {
      description = "tag: lowercase letters, digits, '-' and '_'";
    };
  check =
    types.strMatching "tcp:[0-9]+|https?://[^[:space:]]+"
    // {
      description = "health check: \"tcp:PORT\" or an http(s) URL";
    };

  machineModule =
    { name, ... }:
    {
      options = {
        host = mkOption {
          type = types.nonEmptyStr;
          example = "12.121.212.121";
          description = "The machine's IP address or DNS name.";
        };
        flake_attr = optional types.nonEmptyStr ''
          The `nixosConfigurations` attribute of settings.flake to install (the bot's default:
          the machine's name, `${name}`).
        '';
        ssh_user = optional types.nonEmptyStr "User for the booted system's SSH (bot default: root).";
        ssh_port = optional types.port "The booted system's SSH port (bot default: 22).";
        luks = optional types.bool ''
          The disk is LUKS-encrypted: unlock over the initrd's SSH after each boot
          (bot default: false).
        '';
        initrd_port = optional types.port "The initrd's SSH port, boot.initrd.network.ssh.port (bot default: 2222).";
        unlock = optional (types.enum [
          "auto"
          "askpass"
          "systemd"
        ]) "How the initrd takes the passphrase: scripted (askpass), systemd, or found out (auto, the default).";
        initrd_host_key = optional publicKey "The initrd's public host key, for a machine installed without the bot.";
        host_key = optional publicKey "The booted system's public host key, for a machine installed without the bot.";
        initrd_host_key_file = optional types.nonEmptyStr ''
          On the booted system, the initrd's private host key file, whose public half the bot
          reads over a pinned login (bot default: /boot/ssh_host_ed25519_key).
        '';
        secrets_file = optional types.path ''
          The sops file with this machine's secrets: an absolute path on this host, or a Nix
          path (copied to the Nix store, which is where sops-encrypted files usually live).
          A relative name would be relative to the inventory, which here is in /etc.
        '';
        host_key_secret = optional sopsKey "The sops key holding the machine's private SSH host key.";
        luks_passphrase_secret = optional sopsKey "Optional sops key with the disk passphrase, for the install and auto_unlock.";
        auto_unlock = optional types.bool "Unlock unattended with luks_passphrase_secret (operators are still told).";
        erase_approval = optional types.bool "Erasing (/reinstall, a first /deploy) waits for a second operator or admin to approve.";
        canary = optional types.bool "A rollout (/deploy tag:…) updates it first, alone, before its waves.";
        persist_dir = optional types.str ''
          Impermanence root for machine-id and host keys; "" is / (bot default:
          /nix/persist/system).
        '';
        rw_store_size = optional (types.strMatching "([0-9]+[KMGT]?)?") ''
          Remount /nix/.rw-store on an installer to this size before installing; "" skips it
          (bot default: 512M).
        '';
        operators = optional (types.listOf types.ints.positive) "Telegram user ids who may deploy, unlock and reboot this machine.";
        probe_interval = optional duration "How often the machine is probed (bot default: 60s).";
        boot_timeout = optional duration "How long a boot may take (bot default: 15m).";
        unlock_timeout = optional duration "How long the bot waits for a passphrase (bot default: 30m).";
        rollback_timeout = optional duration "Within this an update must prove the bot can still log in (bot default: 90s).";
        reboot_check = optional cron ''
          Cron expression of the scheduled reboot test, e.g. "0 4 * * 0"; "" is none
          (the default).
        '';
        checks = optional (types.listOf check) "Extra health checks, run on the machine.";
        tags = optional (types.listOf tag) ''
          Short names of the groups the machine belongs to, e.g. [ "web" "eu" ]:
          /report tag:web pictures them together.
        '';
      };
    };

  # The submodule's values without the module system's own attribute and without the keys
  # left unset; Nix paths are copied to the store and written as that path.
  machineEntry =
    machine:
    lib.mapAttrs (_: value: if builtins.isPath value then "${value}" else value) (
      lib.filterAttrs (_: value: value != null) (removeAttrs machine [ "_module" ])
    );
  inventory = {
    machines = lib.mapAttrs (_: machineEntry) cfg.machines;
  };
  inventoryFile = toml.generate "deploybot-machines.toml" inventory;

  secretPath =
    description:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/deploybot/age-key";
      description = ''
        ${description} A path on this host, as a string so that it is never copied to the
        Nix store (e.g. config.sops.secrets.<name>.path or config.age.secrets.<name>.path);
        the service reads it through LoadCredential=.
      '';
    };

  credentials = lib.filterAttrs (option: _: cfg.${option} != null) credentialNames;

  environment = lib.filterAttrs (_: value: value != null) {
    TELEGRAM_BOT_TOKEN_FILE = credentialNames.tokenFile;
    TELEGRAM_API_URL = cfg.settings.apiUrl;
    DEPLOYBOT_ADMINS = lib.concatMapStringsSep "," toString cfg.adminIds;
    DEPLOYBOT_INVENTORY = inventoryPath;
    DEPLOYBOT_FLAKE = cfg.settings.flake;
    DEPLOYBOT_DB = "${stateDir}/deploybot.sqlite3";
    DEPLOYBOT_STATE_DIR = "${stateDir}/state";
    DEPLOYBOT_SSH_KEY = if cfg.sshKeyFile != null then credentialNames.sshKeyFile else null;
    DEPLOYBOT_NIXOS_ANYWHERE = lib.escapeShellArgs cfg.settings.nixosAnywhere;
    DEPLOYBOT_SOPS = cfg.settings.sops;
    DEPLOYBOT_KEEP_DAYS = toString cfg.settings.keepDays;
    DEPLOYBOT_REPORT = cfg.settings.report;
    DEPLOYBOT_ROLLOUT_PARALLEL = toString cfg.settings.rolloutParallel;
    DEPLOYBOT_NIX = cfg.settings.nix;
    DEPLOYBOT_WEBHOOK_URL = cfg.settings.webhookUrl;
    DEPLOYBOT_WEBHOOK_LISTEN = cfg.settings.webhookListen;
    SOPS_AGE_KEY_FILE = if cfg.ageKeyFile != null then credentialNames.ageKeyFile else null;
    SOPS_AGE_SSH_PRIVATE_KEY_FILE =
      if cfg.ageSshKeyFile != null then credentialNames.ageSshKeyFile else null;
    # nix's fetcher and evaluation caches (for `nix run github:…` and flake builds).
    XDG_CACHE_HOME = cacheDir;
    # `nix build <flake>#…` works whether or not the host enabled flakes globally.
    NIX_CONFIG = "extra-experimental-features = nix-command flakes";
  };
in
{
  options.services.deploybot = {
    enable = mkEnableOption "deploybot, the Telegram chat-ops bot for NixOS machines on LUKS disks";

    package = mkOption {
      type = types.package;
      default = pkgs.deploybot or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.deploybot or (pkgs.callPackage ./nix/package.nix { })";
      description = "The deploybot package; the default builds this checkout with the host's nixpkgs.";
    };

    tokenFile = mkOption {
      type = types.str;
      example = "/run/secrets/deploybot/telegram-token";
      description = ''
        File holding the Telegram bot token from @BotFather (the token alone; surrounding
        whitespace is ignored). A path on this host, as a string so that it is never copied
        to the Nix store; the service reads it through LoadCredential=.
      '';
    };
    ageKeyFile = secretPath "The age key sops decrypts the machines' secrets with (SOPS_AGE_KEY_FILE).";
    ageSshKeyFile = secretPath "An SSH private key sops uses as an age key (SOPS_AGE_SSH_PRIVATE_KEY_FILE).";
    sshKeyFile = secretPath ''
      The private key the bot and nixos-anywhere log in to root@target with
      (DEPLOYBOT_SSH_KEY). Unset: /var/lib/deploybot/.ssh/id_ed25519.
    '';

    adminIds = mkOption {
      type = types.listOf types.ints.positive;
      default = [ ];
      example = [ 123456789 ];
      description = "Telegram user ids with every right (DEPLOYBOT_ADMINS); /whoami tells yours.";
    };

    settings = {
      flake = mkOption {
        type = types.nonEmptyStr;
        example = "github:me/infra";
        description = ''
          The flake with the machines' configurations (DEPLOYBOT_FLAKE); the bot passes
          `--flake <flake>#<flake_attr>`. A remote reference, or an absolute path readable
          by the deploybot user outside /home and /root (which the service cannot see).
        '';
      };
      apiUrl = mkOption {
        type = types.nullOr (types.strMatching "https?://.+");
        default = null;
        example = "http://127.0.0.1:8081/bot";
        description = "Bot API base URL (TELEGRAM_API_URL); null is Telegram's own.";
      };
      nixosAnywhere = mkOption {
        type = types.nonEmptyListOf types.str;
        default = [ (lib.getExe pkgs.nixos-anywhere) ];
        defaultText = literalExpression "[ (lib.getExe pkgs.nixos-anywhere) ]";
        example = [
          "nix"
          "run"
          "github:nix-community/nixos-anywhere"
          "--"
        ];
        description = ''
          The nixos-anywhere command prefix, one argument per element
          (DEPLOYBOT_NIXOS_ANYWHERE). The default is nixpkgs' nixos-anywhere, so an install
          fetches nothing but the machine's own configuration.
        '';
      };
      sops = mkOption {
        type = types.str;
        default = lib.getExe pkgs.sops;
        defaultText = literalExpression "lib.getExe pkgs.sops";
        description = "The sops executable (DEPLOYBOT_SOPS).";
      };
      keepDays = mkOption {
        type = types.ints.between 1 36500;
        default = 90;
        description = "Days of probe counts, job logs, reboot tests and ended incidents kept; older ones are pruned once a day; the audit log is kept a year, or this long when longer (DEPLOYBOT_KEEP_DAYS).";
      };
      report = mkOption {
        type = types.nullOr cron;
        default = null;
        example = "0 8 * * 1";
        description = ''
          Cron expression (UTC) of the weekly report, a picture of the fleet's last 7 days
          sent to the admins (DEPLOYBOT_REPORT); "" sends none, null keeps the bot's default,
          Mondays 08:00.
        '';
      };
      rolloutParallel = mkOption {
        type = types.ints.between 1 100;
        default = 5;
        description = "Machines a rollout updates at once in each wave after its canary (DEPLOYBOT_ROLLOUT_PARALLEL).";
      };
      nix = mkOption {
        type = types.str;
        default = lib.getExe config.nix.package;
        defaultText = literalExpression "lib.getExe config.nix.package";
        description = "The nix executable that builds and copies updates (DEPLOYBOT_NIX): the system's, matching its nix-daemon.";
      };
      webhookUrl = mkOption {
        type = types.nullOr (types.strMatching "https://.+");
        default = null;
        example = "https://bot.example.org/deploybot";
        description = "Receive updates by webhook at this public URL (DEPLOYBOT_WEBHOOK_URL) instead of long polling.";
      };
      webhookListen = mkOption {
        type = types.nullOr (types.strMatching ".+:[0-9]+");
        default = null;
        example = "127.0.0.1:8443";
        description = "host:port the webhook server listens on, behind your reverse proxy (DEPLOYBOT_WEBHOOK_LISTEN; bot default 127.0.0.1:8443).";
      };
    };

    machines = mkOption {
      type = types.attrsOf (types.submodule machineModule);
      default = { };
      example = literalExpression ''
        {
          clawsiecats = {
            host = "12.121.212.121";
            flake_attr = "clawsiecats-luks";
            luks = true;
            secrets_file = ./machines/secrets.yaml;
            host_key_secret = "clawsiecats_ssh_host_ed25519_key";
            operators = [ 123456789 ];
            reboot_check = "0 4 * * 0";
          };
        }
      '';
      description = ''
        The inventory, one attribute per machine, written to /etc/deploybot/machines.toml
        (DEPLOYBOT_INVENTORY). The keys are machines.toml's own; unset ones take the bot's
        defaults. A change reloads the running service instead of restarting it.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = lib.all (name: builtins.match "[a-z0-9][a-z0-9_-]{0,62}" name != null) (
            lib.attrNames cfg.machines
          );
          message = "services.deploybot.machines: machine names are lowercase letters, digits, '-' and '_' (at most 63, starting with a letter or digit).";
        }
      ]
      ++ lib.mapAttrsToList (option: _: {
        assertion = lib.hasPrefix "/" cfg.${option} && !lib.hasPrefix builtins.storeDir cfg.${option};
        message = "services.deploybot.${option}: expected an absolute path outside the Nix store (a secret in the store is world-readable).";
      }) credentials;

    users.users.deploybot = {
      isSystemUser = true;
      group = "deploybot";
      home = stateDir;
      description = "deploybot service";
    };
    users.groups.deploybot = { };

    environment.etc."deploybot/machines.toml".source = inventoryFile;

    systemd.services.deploybot = {
      description = "deploybot, Telegram chat-ops for NixOS machines on LUKS disks";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      inherit environment;
      # Before the package's own nix (its wrapper only appends to PATH): nixos-anywhere and
      # the bot then run the system's nix, the one that matches its nix-daemon.
      path = [ config.nix.package ];
      reloadTriggers = [ inventoryFile ];

      serviceConfig = {
        Type = "exec";
        ExecStart = "${lib.getExe cfg.package} run";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "10s";

        User = "deploybot";
        Group = "deploybot";
        StateDirectory = "deploybot";
        StateDirectoryMode = "0700";
        CacheDirectory = "deploybot";
        CacheDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        UMask = "0077";
        LoadCredential = lib.mapAttrsToList (option: name: "${name}:${cfg.${option}}") credentials;

        # Hardening. The bot only needs the network (Telegram, the machines' SSH), its state
        # directory and the nix-daemon's socket: nix builds and copies through the daemon,
        # so /nix stays read-only here (connecting to a socket on a read-only mount works).
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateIPC = true;
        PrivateMounts = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        # Python, OpenSSH, sops (Go) and the nix client generate no code at run time; builds
        # run in the nix-daemon, outside this service and its filters.
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged @resources"
        ];
        SystemCallErrorNumber = "EPERM";
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        DevicePolicy = "closed";
      };
    };
  };
}
