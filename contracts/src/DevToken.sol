// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title DevToken
/// @notice "gpunet Dev Token" (gDEV, 18 decimals) with ERC-2612 permit and an open faucet.
/// @dev FOR DEVNETS AND TESTS ONLY: anyone can mint up to `MAX_MINT_PER_CALL` per call, so the token has no value.
/// Never deploy it on a network where the escrow handles real money.
contract DevToken is ERC20, ERC20Permit {
    /// @notice Largest amount one `mint` call may create (1,000,000 gDEV).
    uint256 public constant MAX_MINT_PER_CALL = 1_000_000 ether;

    /// @notice The requested amount exceeds `MAX_MINT_PER_CALL`.
    error DevToken_MintCapExceeded(uint256 amount, uint256 cap);

    constructor() ERC20("gpunet Dev Token", "gDEV") ERC20Permit("gpunet Dev Token") {}

    /// @notice Faucet: mints `amount` to `to`. Open to anyone; devnets only.
    /// @param to Receiver.
    /// @param amount Base units, at most `MAX_MINT_PER_CALL`.
    function mint(address to, uint256 amount) external {
        if (amount > MAX_MINT_PER_CALL) revert DevToken_MintCapExceeded(amount, MAX_MINT_PER_CALL);
        _mint(to, amount);
    }
}
