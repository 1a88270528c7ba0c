# The outputs of flake.nix, called with a nixpkgs whose packages are the stubs' stand-ins.
{ nixpkgsLib }:

let
  lib = import nixpkgsLib;
  stubs = import ./stubs.nix { inherit lib; };
  flake = import ../../flake.nix;
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: stubs.pkgs);
    };
  };
in
{
  inherit (flake) description inputs;
  systems = lib.attrNames outputs.packages;
  package = outputs.packages.x86_64-linux.default.name;
  same = outputs.packages.x86_64-linux.default == outputs.packages.x86_64-linux.deploybot;
  app = outputs.apps.x86_64-linux.default;
  module = toString outputs.nixosModules.default;
  overlay = (outputs.overlays.default stubs.pkgs stubs.pkgs).deploybot.name;
}
