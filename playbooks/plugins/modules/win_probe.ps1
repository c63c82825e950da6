#!powershell

# avmigrate.migration.win_probe: avmigrate.migration.probe on Windows (the probe action
# plugin runs it on a PowerShell host; documentation in win_probe.py). Reads, in one pass and
# without changing anything, what the orchestrator needs: the Uninstall keys matching the
# banned products' DisplayName patterns (both registry views), services, paths, processes,
# free space, and whether Windows Installer is busy or a reboot is pending. The orchestrator interprets the report, which
# has probe.py's shape. Checked by ansible-lint and syntax only: not yet run on a Windows host.

#AnsibleRequires -CSharpUtil Ansible.Basic

$spec = @{
    options = @{
        banned = @{ type = 'dict' }
        replacement = @{ type = 'dict' }
        catalogue = @{ type = 'dict' }
        replacement_id = @{ type = 'str' }
    }
    required_one_of = @(, @('banned', 'catalogue'))
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)

if ($null -ne $module.Params.catalogue) {
    $mine = $module.Params.catalogue['windows']
    $banned = $mine['banned']
    $repl = $mine['replacements'][$module.Params.replacement_id]
}
else {
    $banned = $module.Params.banned
    $repl = $module.Params.replacement
}
if ($null -eq $banned) { $banned = @{} }
if ($null -eq $repl) { $repl = @{} }

$patterns = @()
$serviceNames = @()
$pathNames = @()
foreach ($entry in $banned.Values) {
    $detect = $entry['detect']
    $patterns += @($detect['registry'])
    $serviceNames += @($detect['services'])
    $pathNames += @($detect['paths'])
}
$serviceNames += @($repl['services'])

# Uninstall keys: 64-bit and 32-bit views. PSChildName is an MSI product's code.
$uninstall = @()
foreach ($key in @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*')) {
    foreach ($item in @(Get-ItemProperty -Path $key -ErrorAction SilentlyContinue)) {
        $name = [string]$item.DisplayName
        if (-not $name) { continue }
        foreach ($pattern in $patterns) {
            if ($pattern -and $name -like $pattern) {
                $uninstall += @{
                    DisplayName = $name
                    DisplayVersion = [string]$item.DisplayVersion
                    PSChildName = [string]$item.PSChildName
                    Publisher = [string]$item.Publisher
                }
                break
            }
        }
    }
}

# A service name may be a pattern (AVP.KES.*): reported under the pattern, as probe.py
# reports a unit, 'active' when one that matches runs.
$services = @{}
foreach ($name in ($serviceNames | Where-Object { $_ } | Sort-Object -Unique)) {
    $found = @(Get-Service -Name $name -ErrorAction SilentlyContinue)
    $services[$name] = if (@($found | Where-Object { $_.Status -eq 'Running' }).Count -gt 0) {
        'active'
    }
    elseif ($found.Count -gt 0) { 'inactive' } else { 'unknown' }
}

$paths = @{}
foreach ($path in ($pathNames | Where-Object { $_ } | Sort-Object -Unique)) {
    $paths[$path] = [bool](Test-Path -Path $path)
}

$executables = @(Get-CimInstance -ClassName Win32_Process -ErrorAction SilentlyContinue |
        ForEach-Object { [string]$_.ExecutablePath })
$processes = @{}
foreach ($bid in $banned.Keys) {
    $pattern = [string]$banned[$bid]['detect']['process_pattern']
    $processes[$bid] = @($executables | Where-Object { $_ -and $_.Contains($pattern) }).Count
}

$free = @{}
$requirements = $repl['requirements']
if ($null -ne $requirements -and $null -ne $requirements['free_mb']) {
    foreach ($path in $requirements['free_mb'].Keys) {
        try {
            $drive = [System.IO.DriveInfo]::new([System.IO.Path]::GetPathRoot($path))
            $free[$path] = [int64]($drive.AvailableFreeSpace / 1MB)
        }
        catch { continue }
    }
}

$pending = @()
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
    $pending += 'component servicing'
}
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
    $pending += 'Windows Update'
}
$renames = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' `
    -Name PendingFileRenameOperations -ErrorAction SilentlyContinue
$renamed = @()
if ($null -ne $renames -and $renames.PendingFileRenameOperations) {
    $pending += 'file renames at boot'
    $renamed = @($renames.PendingFileRenameOperations | Where-Object { $_ })
}
# A banned product's removal completes at the next boot when files of its own are among the
# renames (deletions) Windows makes at boot: its directories, or its process pattern.
$marks = @()
foreach ($entry in $banned.Values) {
    $marks += @($entry['detect']['paths'] | ForEach-Object { ([string]$_).Split('*')[0].TrimEnd('\') })
    $marks += @([string]$entry['detect']['process_pattern'])
}
$marks = @($marks | Where-Object { $_ })
$removalPending = @($renamed | Where-Object {
        $line = [string]$_
        @($marks | Where-Object { $line.IndexOf($_, [StringComparison]::OrdinalIgnoreCase) -ge 0 }).Count -gt 0
    }).Count -gt 0

$os = Get-CimInstance -ClassName Win32_OperatingSystem
$module.Result.changed = $false
$module.Result.avmigrate_report = @{
    os_family = 'Windows'
    platform = 'windows'
    distribution = [string]$os.Caption
    distribution_version = [string]$os.Version
    packages = @{}
    uninstall = $uninstall
    services = $services
    paths = $paths
    processes = $processes
    info = @{}
    free_mb = $free
    msi_in_progress = [bool](Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\InProgress')
    reboot_pending = $pending
    removal_pending_reboot = $removalPending
    booted_at = [int64]([DateTimeOffset]$os.LastBootUpTime).ToUnixTimeSeconds()
}
$module.ExitJson()
