# What nix/module.nix needs of NixOS and nixpkgs, for tests/service/test_nix.py: the NixOS options
# it sets, declared with the types NixOS gives them (so a misspelt or mistyped attribute
# fails as it would on a real system), and a `pkgs` of stand-in packages.
{ lib }:

let
  inherit (lib) mkOption types;

  storePath = name: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  package = name: mainProgram: {
    type = "derivation";
    inherit name;
    outPath = storePath name;
    meta = { inherit mainProgram; };
  };

  pkgs = {
    inherit lib;
    stdenv.hostPlatform.system = "x86_64-linux";
    coreutils = package "coreutils-9.5" "coreutils";
    nix = package "nix-2.28.3" "nix";
    nixos-anywhere = package "nixos-anywhere-1.11.0" "nixos-anywhere";
    openssh = package "openssh-10.0p2" "ssh";
    sops = package "sops-3.11.0" "sops";

    # nixpkgs' Python builder, reduced to recording what the package asks of it.
    python3Packages =
      lib.genAttrs
        [ "apscheduler" "aiolimiter" "asyncssh" "matplotlib" "pytz" "setuptools" "sqlite-utils" "tornado" ]
        (name: package "python3.13-${name}" name)
      // {
        python-telegram-bot = package "python3.13-python-telegram-bot-22.5" "python-telegram-bot" // {
          optional-dependencies = {
            job-queue = [
              pkgs.python3Packages.apscheduler
              pkgs.python3Packages.pytz
            ];
            rate-limiter = [ pkgs.python3Packages.aiolimiter ];
            webhooks = [ pkgs.python3Packages.tornado ];
          };
        };
        buildPythonApplication =
          attrs:
          package "${attrs.pname}-${attrs.version}" attrs.meta.mainProgram
          // {
            inherit attrs;
            inherit (attrs) meta;
          };
      };

    callPackage =
      fn: overrides:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);

    # pkgs.formats.toml renders with remarshal, a build; this one keeps the value it was given
    # (the tests read it) and accepts what the real format's type accepts.
    formats.toml =
      { }:
      {
        type =
          let
            valueType =
              types.nullOr (
                types.oneOf [
                  types.bool
                  types.int
                  types.float
                  types.str
                  types.path
                  (types.attrsOf valueType)
                  (types.listOf valueType)
                ]
              )
              // {
                description = "TOML value";
              };
          in
          valueType;
        generate =
          name: value:
          package name null
          // {
            inherit value;
          };
      };
  };

  primitive = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  unitOption = types.either primitive (types.listOf primitive);
  strings = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };

  service = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = strings;
      requiredBy = strings;
      wants = strings;
      requires = strings;
      after = strings;
      before = strings;
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      path = mkOption {
        type = types.listOf (types.either types.package types.str);
        default = [ ];
      };
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      reloadTriggers = mkOption {
        type = types.listOf unitOption;
        default = [ ];
      };
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };

  user = {
    options = {
      isSystemUser = mkOption {
        type = types.bool;
        default = false;
      };
      group = mkOption {
        type = types.str;
        default = "";
      };
      home = mkOption {
        type = types.path;
        default = "/var/empty";
      };
      createHome = mkOption {
        type = types.bool;
        default = false;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      extraGroups = strings;
    };
  };

  etcEntry = {
    options = {
      source = mkOption { type = types.path; };
      mode = mkOption {
        type = types.str;
        default = "symlink";
      };
    };
  };
in
{
  inherit pkgs;

  module = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      nix.package = mkOption {
        type = types.package;
        default = pkgs.nix;
      };
      users.users = mkOption {
        type = types.attrsOf (types.submodule user);
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.members = strings;
          }
        );
        default = { };
      };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule etcEntry);
        default = { };
      };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule service);
        default = { };
      };
    };
    config._module.args.pkgs = pkgs;
  };
}
