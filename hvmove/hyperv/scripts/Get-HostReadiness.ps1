# Get-HostReadiness: what hvmove needs from this host before its first move, read without changing
# anything. Prints one HostReadiness document: the host's clock (UTC), PowerShell and OS version,
# the Hyper-V module's version (null when it is not installed), the account this session runs as
# and whether its token is a local administrator or a member of Hyper-V Administrators
# (well-known SID S-1-5-32-578), the WinRM quotas that bound hvmove's sessions (null when they
# cannot be read), the UI culture (Hyper-V messages are localized), whether WMI has AvoidRemovingVHDs
# (the path that keeps the source until verified needs it), on a cluster node the cluster
# shared volumes and VM roles with their owner nodes, and for each SharePath whether this session
# can list it: without Kerberos delegation a remote session cannot (the double hop).
param([string[]]$SharePath = @())
$ErrorActionPreference = 'Stop'

$now = (Get-Date).ToUniversalTime().ToString('o')
$os = Get-CimInstance -ClassName Win32_OperatingSystem | Select-Object -First 1
$name = [string]$os.CSName
if (-not $name) { $name = [string]$env:COMPUTERNAME }

$module = Get-Module -ListAvailable -Name Hyper-V | Sort-Object -Property Version -Descending |
    Select-Object -First 1
$moduleVersion = $null
if ($module) { $moduleVersion = [string]$module.Version }

$identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
$principal = [System.Security.Principal.WindowsPrincipal]::new($identity)
$isAdmin = $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
$hyperVAdmins = [System.Security.Principal.SecurityIdentifier]::new('S-1-5-32-578')
$isHyperVAdmin = $principal.IsInRole($hyperVAdmins)

# Quotas: https://learn.microsoft.com/windows/win32/winrm/quotas. Reading the WinRM configuration
# needs an administrator; a failure is reported, not fatal.
try {
    $winrs = Get-WSManInstance -ResourceURI 'winrm/config/winrs' -ErrorAction Stop
    $service = Get-WSManInstance -ResourceURI 'winrm/config/service' -ErrorAction Stop
    $winrm = [pscustomobject]@{
        max_shells_per_user                = [int64]$winrs.MaxShellsPerUser
        max_concurrent_operations_per_user = [int64]$service.MaxConcurrentOperationsPerUser
        idle_timeout_ms                    = [int64]$winrs.IdleTimeout
        error                              = ''
    }
} catch {
    $winrm = [pscustomobject]@{
        max_shells_per_user                = $null
        max_concurrent_operations_per_user = $null
        idle_timeout_ms                    = $null
        error                              = [string]$_.Exception.Message
    }
}

# The keep-source path needs AvoidRemovingVHDs on Msvm_VirtualSystemMigrationSettingData ("added
# in Windows 10 1703 and Windows Server 2016"): read the class, never assume it.
$keepSource = $null
$keepSourceDetail = ''
try {
    $class = Get-CimClass -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemMigrationSettingData -ErrorAction Stop
    $keepSource = @($class.CimClassProperties | Where-Object { $_.Name -eq 'AvoidRemovingVHDs' }).Count -gt 0
    if (-not $keepSource) { $keepSourceDetail = 'Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property' }
} catch {
    $keepSourceDetail = 'Msvm_VirtualSystemMigrationSettingData could not be read: ' + $_.Exception.Message
}

# On a cluster node only: the MSCluster namespace is absent elsewhere ("invalid namespace").
$volumes = [System.Collections.Generic.List[object]]::new()
$roles = [System.Collections.Generic.List[object]]::new()
$clustered = $true
try {
    $null = Get-CimInstance -Namespace 'root\MSCluster' -ClassName MSCluster_Cluster -ErrorAction Stop
} catch {
    $clustered = $false
}
if ($clustered) {
    try {
        foreach ($csv in @(Get-ClusterSharedVolume -ErrorAction Stop)) {
            foreach ($info in @($csv.SharedVolumeInfo)) {
                $volume = [pscustomobject]@{
                    name       = [string]$csv.Name
                    path       = [string]$info.FriendlyVolumeName
                    owner_node = [string]$csv.OwnerNode
                }
                $volumes.Add($volume)
            }
        }
        foreach ($group in @(Get-ClusterGroup -ErrorAction Stop)) {
            if ([string]$group.GroupType -ne 'VirtualMachine') { continue }
            $role = [pscustomobject]@{
                name       = [string]$group.Name
                owner_node = [string]$group.OwnerNode
            }
            $roles.Add($role)
        }
    } catch {
        Write-Warning -Message "Cluster volumes and roles could not be read: $($_.Exception.Message)"
    }
}

# Test-Path writes an error on "access denied" (it does not just say False), so its errors are
# collected instead of stopping the script.
$shares = [System.Collections.Generic.List[object]]::new()
foreach ($p in @($SharePath)) {
    $text = [string]$p
    $found = $false
    $message = ''
    $errorId = ''
    try {
        $found = Test-Path -LiteralPath $text -PathType Container -ErrorAction SilentlyContinue -ErrorVariable probeErrors
        if ($probeErrors.Count -gt 0) {
            $message = [string]$probeErrors[0].Exception.Message
            $errorId = [string]$probeErrors[0].FullyQualifiedErrorId
        } elseif (-not $found) {
            $message = 'not found'
        }
    } catch {
        $found = $false
        $message = [string]$_.Exception.Message
        $errorId = [string]$_.FullyQualifiedErrorId
    }
    $share = [pscustomobject]@{
        path      = $text
        reachable = [bool]$found
        error     = $message
        error_id  = $errorId
    }
    $shares.Add($share)
}

$out = [pscustomobject]@{
    computer_name   = $name
    utc_now         = $now
    ps_version      = [string]$PSVersionTable.PSVersion
    os_version      = [string]$os.Version
    os_caption      = [string]$os.Caption
    hyperv_module   = $moduleVersion
    account         = [string]$identity.Name
    is_admin        = [bool]$isAdmin
    is_hyperv_admin = [bool]$isHyperVAdmin
    winrm           = $winrm
    ui_culture      = [string](Get-UICulture).Name
    keep_source     = $keepSource
    keep_source_detail = $keepSourceDetail
    cluster_volumes = $volumes.ToArray()
    cluster_roles   = $roles.ToArray()
    shares          = $shares.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
