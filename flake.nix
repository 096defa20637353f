{
  description = "scoring-lab: the pinned toolchain (Python packages come from uv.lock)";

  # The only input, so there is nothing to `follows`. A release branch, not unstable: the
  # lock moves only by `nix flake update`, and 25.05 still carries python312.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      forAllSystems = nixpkgs.lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
      ];
      pkgsFor = system: nixpkgs.legacyPackages.${system};
    in
    {
      devShells = forAllSystems (system: {
        default = import ./nix/devshell.nix { pkgs = pkgsFor system; };
      });

      # `nix fmt`: the official Nix formatter (nixfmt, RFC 166 style), which nixpkgs 25.05
      # names nixfmt-rfc-style; nixpkgs-fmt is deprecated upstream.
      formatter = forAllSystems (system: (pkgsFor system).nixfmt-rfc-style);
    };
}
