# Evaluates nix/module.nix with nixpkgs' real module system and the stubs beside this file;
# tests/service/test_nix.py prints the result as JSON. `config` is the NixOS configuration as JSON.
{
  nixpkgsLib,
  config,
}:

let
  lib = import nixpkgsLib;
  stubs = import ./stubs.nix { inherit lib; };
  evaluated = lib.evalModules {
    modules = [
      ../../nix/module.nix
      stubs.module
      (builtins.fromJSON config)
    ];
  };
  cfg = evaluated.config;
  # As NixOS does when it builds a system: failed assertions stop the evaluation.
  failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inventory = cfg.environment.etc."deploybot/machines.toml".source or null;
in
if failed != [ ] then
  throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
else
  {
    service = cfg.systemd.services.deploybot or null;
    users = cfg.users.users;
    groups = lib.attrNames cfg.users.groups;
    etc = lib.mapAttrs (_: entry: toString entry.source) cfg.environment.etc;
    inventory = if inventory == null then null else inventory.value;
    machineOptions = lib.attrNames (
      removeAttrs (evaluated.options.services.deploybot.machines.type.getSubOptions [ ]) [ "_module" ]
    );
    # Not `src`: lib.fileset needs Nix 2.14 (builtins.readFileType), newer than Debian's.
    package =
      let
        attrs = cfg.services.deploybot.package.attrs or null;
      in
      if attrs == null then
        null
      else
        removeAttrs attrs [ "src" ]
        // {
          dependencies = map (p: p.name) attrs.dependencies;
          build-system = map (p: p.name) attrs.build-system;
        };
  }
