{
  description = "deploybot: Telegram chat-ops for NixOS machines on LUKS-encrypted disks";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # The bot, its tests and the service are Linux-only (systemd, cryptsetup, initrd SSH).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        deploybot = pkgs.callPackage ./nix/package.nix { };
        default = deploybot;
      });

      # `nix run github:…/deploybot -- check`; with no arguments it prints its help.
      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "deploybot's command line: run, console, check";
        };
      });

      overlays.default = final: _prev: { deploybot = final.callPackage ./nix/package.nix { }; };

      # services.deploybot. Its package is built with the host's own nixpkgs (one Python in
      # the system closure); set services.deploybot.package to this flake's
      # packages.<system>.default to use the nixpkgs pinned here instead.
      nixosModules.default = ./nix/module.nix;
      nixosModules.deploybot = self.nixosModules.default;
    };
}
